"""semid from your own Spark code: a UDF for DataFrames and SQL, and the IDs as DataFrames.

    from semid_udf import semantic_codes, semantic_ids

    codes = semantic_codes("ckpt/")                      # Column -> Column
    df.withColumn("codes", codes("embedding"))           # struct<sid_0..sid_{L-1}: int, reason: string>
    spark.udf.register("semantic_codes", codes)          # SELECT semantic_codes(embedding).sid_0 FROM items

    ids, rejects = semantic_ids(df, "ckpt/")             # what semid-assign publishes, as DataFrames

Both work on classic and Spark Connect sessions: the checkpoint's bytes travel inside the
function Spark ships to its Python workers (no ``SparkContext``, no broadcast), where the
model is built once per worker process and model version. Both give the codes
``semid-assign`` gives for the same embedding, whatever the column type, batch or partition.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Iterator, cast

import numpy as np
from pyspark import StorageLevel
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from semid_udf.worker import arrow
from semid_udf.spark import ids as ix
from semid_udf.spark import schema as sc
from semid_udf.model.checkpoint import Checkpoint, read_checkpoint
from semid_udf.config import JobConfig
from semid_udf.model.encode import CodeEncoder
from semid_udf.errors import CheckpointError, ConfigError, SemidError
from semid_udf.spark.inputs import Source, cores, read_source

log = logging.getLogger(__name__)


def as_checkpoint(checkpoint: Any) -> Checkpoint:
    """A checkpoint object as it is, or one read (and verified) from a path or URI."""
    if isinstance(checkpoint, Checkpoint):
        return checkpoint
    if isinstance(checkpoint, (str, os.PathLike)):
        return read_checkpoint(checkpoint)
    raise ConfigError(f"checkpoint: expected a checkpoint directory (path or URI) or a checkpoint object "
                      f"(semid_udf.read_checkpoint), got {type(checkpoint).__name__}")


def probe(ckpt: Checkpoint, cfg: JobConfig) -> None:
    """Build the model here, on the CPU, and encode one micro-batch of zeros: a checkpoint
    whose config does not fit its weights, or a plugin that cannot be imported or returns
    something unusable, fails now with its real cause, before any Spark work or table."""
    try:
        enc = CodeEncoder(ckpt, dataclasses.replace(cfg.encode, device="cpu"), cfg.plugin)
        zeros = np.zeros((1, enc.input_dim), dtype=np.float32)
        enc.encode(zeros, finite_checked=True)
        if cfg.output.collisions == "nearest_free":
            enc.candidates(zeros, cfg.output.candidates, finite_checked=True)
    except SemidError:
        raise
    except Exception as e:  # torch's load_state_dict, a plugin's own code: say what it said
        raise CheckpointError(f"checkpoint {ckpt.model_version}: the model cannot be built or run: "
                              f"{type(e).__name__}: {' '.join(str(e).split())}") from e


def semantic_codes(checkpoint: Any, *, config: JobConfig | None = None, binary_dtype: str | None = None) -> Any:
    """A ``Column -> Column`` function giving ``struct<sid_0, ..., sid_{L-1}: int, reason: string>``.

    ``reason`` is null for a coded row; a row that cannot be coded gets null codes and the
    reason the rejects table would give (``null_embedding``, ``wrong_length``,
    ``null_element``, ``non_finite``, ``sparse_vector``, ``non_finite_latent``). The input
    column may be ``array<float>``, ``array<double>``, a Spark ML vector, or ``binary``
    with ``binary_dtype`` (``float32``, ``float16``, ``float64``, little-endian). Register
    it for SQL with ``spark.udf.register("semantic_codes", semantic_codes(ckpt))``.
    """
    ckpt = as_checkpoint(checkpoint)
    cfg = config or JobConfig()
    probe(ckpt, cfg)
    fn = arrow.udf_fn(ckpt, cfg.encode, cfg.plugin, cfg.input.binary_dtype if binary_dtype is None else binary_dtype)
    fn.__name__ = "semantic_codes"
    # scalar: pa.Array -> pa.Array. pyspark's stub requires functionType; at run time it is inferred from fn
    return F.arrow_udf(fn, sc.codes_struct(int(ckpt.model["levels"])).spark())  # type: ignore[call-overload]


@dataclass
class SemanticIds:
    """What :func:`semantic_ids` returns. Unpacks as ``ids, rejects``.

    ``ids``: ``item_id``, ``sid_0..sid_{L-1}``, ``sid_suffix``, ``semantic_id``,
    ``embedding_hash`` (only items new to ``existing`` in append mode); ``rejects``:
    ``item_id`` (as text), ``reason``, ``detail``. Both read the encoded rows cached by the
    call (MEMORY_AND_DISK): call :meth:`unpersist` when done with them.
    """

    ids: DataFrame
    rejects: DataFrame
    model_version: str
    rows_in: int
    rows_valid: int  # rows with codes, after duplicates
    rows_new: int  # rows in ``ids``
    rejects_by_reason: dict[str, int] = field(default_factory=dict)
    append: dict[str, int] = field(default_factory=dict)  # rows_existing, rows_embedding_changed
    collisions: dict[str, Any] = field(default_factory=dict)  # how collisions were resolved (moves, by how far)
    _cached: list[DataFrame] = field(default_factory=list, repr=False)

    @property
    def rows_rejected(self) -> int:
        return sum(self.rejects_by_reason.values())

    def __iter__(self) -> Iterator[DataFrame]:
        return iter((self.ids, self.rejects))

    def unpersist(self) -> None:
        """Drop the cached rows, waiting until they are gone (as every unpersist in semid does):
        the memory is free for what follows, and no late Spark line about a block that was never
        stored (a run that failed while caching) is logged after the run's last line."""
        for df in self._cached:
            df.unpersist(blocking=True)
        self._cached.clear()


def semantic_ids(df: DataFrame | str, checkpoint: Any, *, config: JobConfig | None = None,
                 spark: SparkSession | None = None, existing: DataFrame | None = None,
                 files: int | None = None) -> SemanticIds:
    """The IDs ``semid-assign`` would publish for these rows, and their rejects, as DataFrames.

    ``df``: a DataFrame with the id and embedding columns (``config.input``), or the path
    of a Parquet dataset (then ``spark`` is needed; a local path is read by pyarrow in the
    tasks, as the job does). ``existing``: the published rows of this model version
    (``item_id``, ``sid_*``, ``sid_suffix``, ``embedding_hash``): only items not among them
    get IDs, their suffixes continuing each code tuple's (append mode). ``files``: how many
    sorted, disjoint code ranges (output partitions) the ids come in.

    Encodes once, now (the rows are cached); the suffix and the rejects are computed when
    the returned DataFrames are used.
    """
    ckpt = as_checkpoint(checkpoint)
    cfg = config or JobConfig()
    if isinstance(df, DataFrame):
        spark = df.sparkSession
        source = read_source(spark, cfg.input, frame=df)
    elif isinstance(df, (str, os.PathLike)):
        if spark is None:
            raise ConfigError("semantic_ids: a path needs spark=<the SparkSession>")
        source = read_source(spark, cfg.input, input_path=str(df))
    else:
        raise ConfigError(f"semantic_ids: expected a DataFrame or a Parquet path, got {type(df).__name__}")
    probe(ckpt, cfg)
    return build(spark, source, ckpt, cfg, existing=existing, files=files)


# What the encode runs with (its caller sets it: a session setting is changed only by the thread
# that plans the run's queries, see semid_udf.table.concurrency). With adaptive execution, Spark
# fills a cache in a job of its own and only then runs the aggregate's first stage over it, a
# second pass over every row; without, the encode tasks fill the cache and feed the aggregate in
# one stage (bench, 1M rows: 2.4 s less).
AQE_OFF = ("spark.sql.adaptive.enabled", "false")


@contextlib.contextmanager
def session_conf(spark: SparkSession, key: str, value: str) -> Iterator[None]:
    """``key`` is ``value`` for the queries planned meanwhile; then the session's own value again."""
    old = spark.conf.get(key, None)
    spark.conf.set(key, value)
    try:
        yield
    finally:
        if old is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, old)


@dataclass
class Encoded:
    """Every input row encoded once (codes or a reject reason), duplicates classified, cached."""

    rows: DataFrame
    counts: dict[str | None, int]  # rows per reason (None: valid)
    cached: list[DataFrame]


def encode_rows(spark: SparkSession, source: Source, ckpt: Checkpoint, cfg: JobConfig,
                rows: DataFrame | None = None) -> Encoded:
    """The expensive step of :func:`semantic_ids`, and the only one that touches vectors (run it
    with ``AQE_OFF``): encode (``rows``: already encoded rows, from staged shards), cache, count per reason, and
    classify the copies of repeated ids when there are any."""
    levels = int(ckpt.model["levels"])
    cached = []
    c = (rows if rows is not None else ix.coded(spark, source, ckpt, cfg, levels)).persist(StorageLevel.MEMORY_AND_DISK)
    cached.append(c)
    try:
        counts, repeated = ix.count_rows(c)
        if repeated:
            log.info("%d item ids occur more than once: classifying their copies", repeated)
            c = ix.classify_duplicates(c).persist(StorageLevel.MEMORY_AND_DISK)
            cached.append(c)
            counts = {r["reason"]: int(r["count"]) for r in c.groupBy("reason").count().collect()}
            cached.pop(0).unpersist(blocking=True)
    except BaseException:
        for d in cached:
            d.unpersist(blocking=True)
        raise
    return Encoded(c, counts, cached)


def ids_of(spark: SparkSession, enc: Encoded, ckpt: Checkpoint, cfg: JobConfig, id_type: str, *,
           existing: DataFrame | None = None, files: int | None = None) -> SemanticIds:
    """The rest of :func:`semantic_ids`, over the encoded rows: new items only when
    ``existing`` (append), collisions resolved (``output.collisions``), suffixes."""
    levels, size = int(ckpt.model["levels"]), int(ckpt.model["codebook_size"])
    sids = sc.sid_cols(levels)
    c, counts, cached = enc.rows, dict(enc.counts), enc.cached
    rows_in = sum(counts.values())
    good = counts.pop(None, 0)
    nearest_free = cfg.output.collisions == "nearest_free"
    kept = c.where(F.col("reason").isNull()).select("item_id", *sids, "embedding_hash",
                                                    *(["cand", "cand_dist"] if nearest_free else []))
    base, append, collisions = None, {}, {"mode": cfg.output.collisions}
    rows_new = good
    if existing is not None:
        old = kept.join(existing.select("item_id", F.col("embedding_hash").alias("_old_hash")), "item_id", "inner")
        agg = old.agg(F.count(F.lit(1)).alias("n"),
                      F.sum((F.col("embedding_hash") != F.col("_old_hash")).cast("int")).alias("changed")).first()
        agg = cast(Row, agg)  # an aggregate: one row
        append = {"rows_existing": int(agg["n"]), "rows_embedding_changed": int(agg["changed"] or 0)}
        if append["rows_embedding_changed"]:
            log.warning("%d items already have an ID but arrived with a changed embedding: their published ID is kept "
                        "(append mode never moves an ID)", append["rows_embedding_changed"])
        kept = kept.join(existing.select("item_id"), "item_id", "left_anti")
        base = existing.groupBy(*sids).agg((F.max("sid_suffix") + 1).alias("_next"))
        rows_new = good - append["rows_existing"]
    if nearest_free:  # buckets over the cap: items move to their nearest last-level code with room
        resolved, moved = ix.resolve_collisions(kept, existing, levels, cfg.output.max_bucket_size)
        kept = resolved.persist(StorageLevel.MEMORY_AND_DISK)
        cached.append(kept)
        collisions = ix.collision_report(moved, cfg.output.max_bucket_size)
        log.info("collisions: %d items moved to a nearby code with room (cap %d)", collisions["moved"],
                 cfg.output.max_bucket_size)
    n_files = files or ix.output_files(rows_new, cores(spark))
    out = ix.with_suffix(kept, levels, size, n_files, base).withColumn("semantic_id", ix.semantic_id(levels))
    ids_df = out.select(*sc.ids(levels, id_type).names)
    rejects = c.where(F.col("reason").isNotNull()).select(F.col("item_id").cast("string").alias("item_id"), "reason",
                                                          "detail")
    by_reason = cast("dict[str, int]", counts)  # None (the valid rows) popped above
    return SemanticIds(ids=ids_df, rejects=rejects, model_version=ckpt.model_version, rows_in=rows_in,
                       rows_valid=good, rows_new=rows_new, rejects_by_reason=dict(sorted(by_reason.items())),
                       append=append, collisions=collisions, _cached=cached)


def build(spark: SparkSession, source: Source, ckpt: Checkpoint, cfg: JobConfig, *, rows: DataFrame | None = None,
          existing: DataFrame | None = None, files: int | None = None) -> SemanticIds:
    """:func:`semantic_ids` after its checks; ``rows``: already encoded rows (staged shards)."""
    with session_conf(spark, *AQE_OFF):
        enc = encode_rows(spark, source, ckpt, cfg, rows)
    try:
        return ids_of(spark, enc, ckpt, cfg, source.id_type, existing=existing, files=files)
    except BaseException:
        for d in enc.cached:
            d.unpersist(blocking=True)
        raise
