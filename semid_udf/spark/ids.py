"""From embeddings to published IDs, as Spark DataFrame steps (no tables, no writes):
encode -> count -> classify duplicates -> collision suffix.

Everything after the encode moves ids, hashes and codes only, never vectors. Shared by
:func:`semid_udf.semantic_ids` and the ``semid-assign`` job, which is that function plus a
publish step.
"""
from __future__ import annotations

import math
from typing import Any, Callable, cast

from pyspark.sql import Column, DataFrame, Row, SparkSession, Window
from pyspark.sql import functions as F

from semid_udf.worker import arrow
from semid_udf.spark import schema as sc
from semid_udf.model import quality
from semid_udf.model.checkpoint import Checkpoint
from semid_udf.config import JobConfig
from semid_udf.vectors import Reason
from semid_udf.errors import ReconcileError
from semid_udf.spark.inputs import Source

ROWS_PER_FILE = 1_000_000
MIN_ROWS_PER_FILE = 100_000


def coded(spark: SparkSession, source: Source, ckpt: Checkpoint, cfg: JobConfig, levels: int,
          shard: tuple[int, int] = (0, 1)) -> DataFrame:
    """Every input row (of shard ``k`` of ``n``) with codes or a reject reason: the
    :func:`semid_udf.spark.schema.coded` columns."""
    top = cfg.output.candidates if cfg.output.collisions == "nearest_free" else 0
    out = sc.coded(levels, source.id_type, candidates=bool(top)).spark()
    k, n = shard
    if source.plan is not None:
        # One task per unit: task i gets the number i and reads units[i] (no Python rows to convert).
        units = [u for u in source.plan.units if u.index % n == k]
        fn = arrow.reader_fn(ckpt, source.plan, units, cfg.encode, cfg.plugin, cfg.output.arrow_batch, top)
        return spark.range(0, len(units), 1, max(1, len(units))).mapInArrow(fn, out)
    if source.fetched is not None:
        # One task per split of Spark's binaryFile scan; a shard is the files whose path hashes to it.
        fplan, whole = source.fetched
        if n > 1:
            whole = whole.where(F.pmod(F.xxhash64(F.col("path")), F.lit(n)) == k)
        fn = arrow.fetched_fn(ckpt, fplan, cfg.encode, cfg.plugin, cfg.output.arrow_batch, top)
        return whole.select("path", "modificationTime", "length", "content").mapInArrow(fn, out)
    frame = cast(DataFrame, source.frame)  # a Source without a plan or fetched files has a frame
    if n > 1:
        frame = frame.where(F.pmod(F.xxhash64(F.col("item_id")), F.lit(n)) == k)
    return frame.mapInArrow(arrow.map_fn(ckpt, cfg.encode, cfg.plugin, cfg.input.binary_dtype, top), out)


def count_rows(rows: DataFrame) -> tuple[dict[str | None, int], int]:
    """Rows per reason (``None``: valid) and the number of ids with more than one valid row,
    in one aggregate keyed by reason and, for valid rows, the id."""
    good = F.col("reason").isNull()
    per_key = rows.groupBy("reason", F.when(good, F.col("item_id")).alias("_id")).agg(F.count(F.lit(1)).alias("n"))
    agg = per_key.groupBy("reason").agg(F.sum("n").alias("rows"),
                                        F.count_if(F.col("reason").isNull() & (F.col("n") > 1)).alias("repeated"))
    counts, repeated = {}, 0
    for r in agg.collect():
        counts[r["reason"]] = int(r["rows"])
        repeated += int(r["repeated"])
    return counts, repeated


def classify_duplicates(r: DataFrame) -> DataFrame:
    """Final ``reason``/``detail`` per row: identical copies of an id are kept once (the others
    rejected as ``duplicate_identical``); copies whose embeddings differ are all rejected as
    ``duplicate_conflict``. Shuffles ids, hashes and codes only, never vectors."""
    good = F.col("reason").isNull()
    h = F.when(good, F.col("embedding_hash"))
    w = Window.partitionBy("item_id")
    wo = w.orderBy(F.col("reason").asc_nulls_first(), F.col("embedding_hash"))
    copies = F.count(h).over(w)
    conflict = F.min(h).over(w) != F.max(h).over(w)
    rn = F.row_number().over(wo)
    reason = (
        F.when(~good, F.col("reason"))
        .when(conflict, Reason.DUPLICATE_CONFLICT.value)
        .when(rn > 1, Reason.DUPLICATE_IDENTICAL.value)
    )
    detail = (
        F.when(~good, F.col("detail"))
        .when(conflict, F.format_string("%d valid copies of this item_id with different embeddings", copies))
        .when(rn > 1, F.format_string("identical copy %d of %d; one copy kept", rn, copies))
    )
    rest = [c for c in r.columns if c not in ("reason", "detail")]
    return r.select(*rest, reason.alias("reason"), detail.alias("detail"))


def bucket_shifts(levels: int, codebook_size: int) -> list[int] | None:
    """Left shift of each level's code in the packed bucket key (level 0 highest), or
    ``None`` when ``levels`` codes of ``codebook_size`` values do not fit in 63 bits."""
    bits = max(1, (codebook_size - 1).bit_length())
    if levels * bits > 63:
        return None
    return [bits * (levels - 1 - i) for i in range(levels)]


def bucket_key(levels: int, codebook_size: int) -> Column | None:
    """One bigint per code tuple: the codes packed big-end first (codes are in
    ``[0, codebook_size)``, checked by the adapter), so the key orders exactly as the tuple.
    Spark sorts and groups one long much faster than several ints: its sort compares a
    64-bit prefix of the first key and only falls back to comparing whole rows on ties.
    ``None`` when the tuple does not fit in 63 bits."""
    shifts = bucket_shifts(levels, codebook_size)
    if shifts is None:
        return None
    key = F.lit(0).cast("long")
    for c, shift in zip(sc.sid_cols(levels), shifts):
        key = key.bitwiseOR(F.shiftleft(F.col(c).cast("long"), shift))
    return key


def with_suffix(kept: DataFrame, levels: int, codebook_size: int, files: int, base: DataFrame | None = None
                ) -> DataFrame:
    """Add ``sid_suffix``: 0, 1, 2, ... per code tuple in ``item_id`` order (after ``base``'s
    per-tuple next suffix in append mode), range-partitioned by the codes so each output
    file holds a sorted, disjoint range of codes."""
    sids = sc.sid_cols(levels)
    if base is not None:  # append: continue after the bucket's existing suffixes
        kept = kept.join(base, on=sids, how="left")
    key = bucket_key(levels, codebook_size)
    keys = sids if key is None else ["_bucket"]
    if key is not None:
        kept = kept.withColumn("_bucket", key)
    ranged = kept.repartitionByRange(files, *keys)
    window = Window.partitionBy(*keys).orderBy("item_id")
    rn = F.row_number().over(window) - 1
    if base is None:
        out = ranged.withColumn("sid_suffix", rn.cast("int"))
    else:
        out = ranged.withColumn("sid_suffix", (F.coalesce(F.col("_next"), F.lit(0)) + rn).cast("int")).drop("_next")
    return out.drop("_bucket")


def resolve_collisions(kept: DataFrame, existing: DataFrame | None, levels: int, cap: int
                       ) -> tuple[DataFrame, DataFrame]:
    """``output.collisions = nearest_free`` (see :mod:`semid_udf.model.collisions`): the kept rows
    (with ``cand``/``cand_dist``) with their last-level code resolved, one code prefix per
    group; ``existing`` (published rows of the version) are counted, never moved. Returns the
    rows (``item_id``, ``sid_*``, ``embedding_hash``) and, per moved item, ``_rank`` (which
    candidate it took, 1 = its second nearest) and ``_extra`` (the added squared distance)."""
    sids = sc.sid_cols(levels)
    prefix = sids[:-1]
    new = kept.select(*sids, "item_id", "embedding_hash", "cand", "cand_dist", F.lit(None).cast("long").alias("_n"))
    groups = new
    if existing is not None:
        held = existing.groupBy(*sids).agg(F.count(F.lit(1)).alias("_n"))
        groups = new.unionByName(held, allowMissingColumns=True)
    id_type = dict(kept.dtypes)["item_id"]
    out = sc.Schema(tuple((c, "int") for c in sids) + (("item_id", id_type), ("embedding_hash", "bigint"),
                                                       ("_rank", "int"), ("_extra", "float")))
    keys = [F.col(c) for c in prefix] or [F.lit(0)]
    resolved = groups.groupBy(*keys).applyInArrow(_resolver(levels, cap, out.arrow()), out.spark())
    return resolved.select("item_id", *sids, "embedding_hash"), resolved.where(F.col("_rank") > 0)


def _resolver(levels: int, cap: int, schema: Any) -> Callable[[Any], Any]:
    """For ``applyInArrow``: one code prefix's rows in, their resolved codes out."""
    import pyarrow as pa

    from semid_udf.model.collisions import Item, resolve

    last = f"sid_{levels - 1}"

    def run(table: Any) -> Any:
        d = table.to_pydict()
        published: dict[int, int] = {}
        items, at = [], []
        for i in range(table.num_rows):
            if d["_n"][i] is not None:
                published[d[last][i]] = published.get(d[last][i], 0) + int(d["_n"][i])
            else:
                items.append(Item(d["item_id"][i], d[last][i], tuple(d["cand"][i]), tuple(d["cand_dist"][i])))
                at.append(i)
        moves = resolve(items, published, cap)
        cols = {f"sid_{k}": [d[f"sid_{k}"][i] for i in at] for k in range(levels - 1)}
        cols[last] = [m.code for m in moves]
        cols["item_id"] = [m.item_id for m in moves]
        cols["embedding_hash"] = [d["embedding_hash"][i] for i in at]
        cols["_rank"] = [m.rank for m in moves]
        cols["_extra"] = [m.extra for m in moves]
        return pa.Table.from_pydict(cols, schema=schema)

    return run


def collision_report(moved: DataFrame, cap: int) -> dict[str, Any]:
    """How many items moved, to which candidate rank, and how much farther (squared distance)."""
    agg = moved.agg(F.count(F.lit(1)).alias("moved"), F.avg("_extra").alias("mean"), F.max("_extra").alias("max"))
    row = cast(Row, agg.first())  # an aggregate: one row
    ranks = {int(r["_rank"]): int(r["n"]) for r in moved.groupBy("_rank").agg(F.count(F.lit(1)).alias("n")).collect()}
    return {"mode": "nearest_free", "cap": cap, "moved": int(row["moved"]),
            "moved_to_rank": {str(k): v for k, v in sorted(ranks.items())},
            "extra_distance_mean": None if row["mean"] is None else round(float(row["mean"]), 6),
            "extra_distance_max": None if row["max"] is None else round(float(row["max"]), 6)}


def semantic_id(levels: int) -> Column:
    return F.concat_ws("-", *[F.col(c).cast("string") for c in sc.sid_cols(levels)], F.col("sid_suffix").cast("string"))


def output_files(rows: int, cores: int) -> int:
    """Files per run: at most ROWS_PER_FILE rows each, and one per core (while each keeps
    at least MIN_ROWS_PER_FILE rows) so that sorting and writing them uses every core."""
    return max(1, math.ceil(rows / ROWS_PER_FILE), min(cores, rows // MIN_ROWS_PER_FILE))


# ---------------------------------------------------------------------------------------
# Bucket statistics: a bucket = the items sharing one code tuple

def bucket_stats(codes: DataFrame, levels: int, codebook_size: int, rows: int) -> dict[str, Any]:
    """One small job: how many buckets of each size."""
    key = bucket_key(levels, codebook_size)
    keys = sc.sid_cols(levels) if key is None else [key.alias("_bucket")]
    by_size = {int(r["size"]): int(r["buckets"]) for r in
               codes.groupBy(*keys).agg(F.count(F.lit(1)).alias("size"))
               .groupBy("size").agg(F.count(F.lit(1)).alias("buckets")).collect()}
    return quality.binned_bucket_stats(quality.bins_of_sizes(by_size), max(by_size, default=0), rows)


def suffix_marks(top: int) -> list[int]:
    """The suffixes whose row counts give the size bins up to ``top``: 0, 1, 2, 4, ..., 2**top."""
    return [0] + [1 << k for k in range(top + 1)]


def bins_from_suffix_counts(rows_with_suffix: dict[int, int], top: int) -> dict[int, int]:
    """Buckets per size bin (``quality.size_bin``) from the number of rows with suffix 0, 1, 2, 4, ...,
    ``2**top``: the buckets with more than ``m`` items are the rows with suffix ``m``."""
    marks = suffix_marks(top)
    by_bin = {k: rows_with_suffix[marks[k]] - rows_with_suffix[marks[k + 1]] for k in range(top + 1)}
    if any(n < 0 for n in by_bin.values()):  # suffixes of a bucket run 0, 1, 2, ... with no gaps
        raise ReconcileError(f"bucket statistics: expected suffixes without gaps in every bucket, got more rows "
                             f"with a higher suffix than with a lower one (rows per suffix {rows_with_suffix})")
    return by_bin


def suffix_stats(rows: int) -> tuple[list[Any], Callable[[dict[str, Any]], dict[str, Any]]]:
    """The same statistics from the suffixes of a version's rows, as columns of the aggregate
    that counts them for the reconciliation: no job of their own. Suffixes run 0, 1, ...,
    size - 1 in every bucket, so the buckets with more than ``m`` items are the rows with
    suffix ``m`` (``bins_from_suffix_counts``). Returns the aggregate columns and a function
    of the aggregate's row that gives the statistics."""
    suffix = F.col("sid_suffix")
    top = quality.size_bin(max(rows, 1))
    marks = suffix_marks(top)
    cols = [F.max(suffix).alias("largest_suffix")] + [F.count_if(suffix == mark).alias(f"suffix_{mark}") for mark in marks]

    def read(m: dict[str, Any]) -> dict[str, Any]:
        at = {mark: int(m[f"suffix_{mark}"]) for mark in marks}
        largest = int(m["largest_suffix"]) + 1 if m["largest_suffix"] is not None else 0
        return quality.binned_bucket_stats(bins_from_suffix_counts(at, top), largest, rows)

    return cols, read
