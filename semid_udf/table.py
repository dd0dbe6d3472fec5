"""Spark side of a run: input checks, duplicates, the collision
suffix, the output/rejects/manifest tables.

Tables (Parquet, in the metastore):
- ``<name>``: the contract's columns, then ``embedding_hash`` and ``run_id``; partitioned by
  ``model_version``; replaced per version by dynamic partition overwrite (never a static
  overwrite, which deletes the old data before the job runs).
- ``<name>_rejects``: ``item_id`` (as text), ``reason``, ``detail``; partitioned by
  ``model_version`` and ``run_id``.
- ``<name>_manifest``: one row per run and state (running, complete, failed), appended; the
  ``complete`` row is written after the data.
"""
from __future__ import annotations

import json
import logging
import re
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from .errors import ConfigError, InputError

log = logging.getLogger(__name__)

ID_TYPES = (T.LongType, T.IntegerType, T.StringType)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


def sid_cols(levels: int) -> list[str]:
    return [f"sid_{i}" for i in range(levels)]


def check_table_name(name: str) -> tuple[str, str]:
    if not _NAME.match(name or ""):
        raise ConfigError(f"--table: expected DB.NAME (letters, digits, _), got {name!r}")
    db, _, tbl = name.rpartition(".")
    return db or "default", tbl


def read_input(spark: SparkSession, path: str | None, table: str | None) -> DataFrame:
    try:
        return spark.read.parquet(path) if path else spark.table(table)
    except Exception as e:  # AnalysisException and friends: re-raised with the input named
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"input {path or table}: cannot read it: {first}") from e


def normalise_input(df: DataFrame, id_col: str, emb_col: str, cast_double: bool) -> DataFrame:
    """Select (item_id, embedding as array<float>), or raise naming column, expected, actual."""
    fields = {f.name: f.dataType for f in df.schema.fields}
    for col, what in ((id_col, "the item id"), (emb_col, "the embedding")):
        if col not in fields:
            raise InputError(f"column {col!r} ({what}) missing; columns found: {sorted(fields)}")
    id_type, emb_type = fields[id_col], fields[emb_col]
    ids = F.col(id_col)
    if isinstance(id_type, (T.ByteType, T.ShortType)):  # widened, as the pyarrow reader does
        ids, id_type = ids.cast("int"), T.IntegerType()
    if not isinstance(id_type, ID_TYPES):
        raise InputError(f"column {id_col!r}: expected bigint, int or string, got {id_type.simpleString()}")
    if not isinstance(emb_type, T.ArrayType) or not isinstance(emb_type.elementType, (T.FloatType, T.DoubleType)):
        raise InputError(
            f"column {emb_col!r}: expected array<float> (or array<double>), got {emb_type.simpleString()}"
        )
    emb = F.col(emb_col)
    if isinstance(emb_type.elementType, T.DoubleType):
        if not cast_double:
            raise InputError(f"column {emb_col!r}: expected array<float>, got array<double> (input.cast_double is false)")
        log.info("casting %s from array<double> to array<float> (input.cast_double)", emb_col)
        emb = emb.cast(T.ArrayType(T.FloatType()))
    return df.select(ids.alias("item_id"), emb.alias("embedding"))


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
        .when(conflict, "duplicate_conflict")
        .when(rn > 1, "duplicate_identical")
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
    for c, shift in zip(sid_cols(levels), shifts):
        key = key.bitwiseOR(F.shiftleft(F.col(c).cast("long"), shift))
    return key


def with_suffix(kept: DataFrame, levels: int, codebook_size: int, files: int, base: DataFrame | None = None
                ) -> DataFrame:
    """Add ``sid_suffix``: 0, 1, 2, ... per code tuple in ``item_id`` order (after ``base``'s
    per-tuple next suffix in append mode), range-partitioned by the codes so each output
    file holds a sorted, disjoint range of codes."""
    sids = sid_cols(levels)
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


def semantic_id(levels: int) -> Column:
    return F.concat_ws("-", *[F.col(c).cast("string") for c in sid_cols(levels)], F.col("sid_suffix").cast("string"))


def table_columns(id_type: T.DataType, levels: int) -> list[tuple[str, str]]:
    cols = [("item_id", id_type.simpleString())] + [(c, "int") for c in sid_cols(levels)]
    cols += [("sid_suffix", "int"), ("semantic_id", "string"), ("embedding_hash", "bigint"), ("run_id", "string"),
             ("model_version", "string")]
    return cols


# Partition columns last, in PARTITIONED BY order: insertInto matches columns by position.
REJECT_COLUMNS = [("item_id", "string"), ("reason", "string"), ("detail", "string"), ("model_version", "string"),
                  ("run_id", "string")]

MANIFEST_COLUMNS = [
    ("run_id", "string"), ("model_version", "string"), ("status", "string"), ("mode", "string"),
    ("started_at", "timestamp"), ("finished_at", "timestamp"),
    ("rows_in", "bigint"), ("rows_out", "bigint"), ("rows_rejected", "bigint"), ("rows_new", "bigint"),
    ("details", "string"), ("error", "string"),
]


def ensure_database(spark: SparkSession, db: str, warehouse: str | None) -> None:
    """Create ``db`` (under ``warehouse`` when given); refuse one that lives elsewhere."""
    if not warehouse:
        spark.sql(f"CREATE DATABASE IF NOT EXISTS `{db}`")
        return
    from pathlib import Path

    loc = Path(warehouse).resolve() / f"{db}.db"
    spark.sql(f"CREATE DATABASE IF NOT EXISTS `{db}` LOCATION '{loc}'")
    actual = spark.sql(f"DESCRIBE DATABASE `{db}`").where("info_name = 'Location'").first()["info_value"]
    if actual.removeprefix("file:").rstrip("/") != str(loc):
        raise ConfigError(f"database {db}: expected at {loc} (--warehouse), got an existing one at {actual}")


def ensure_table(spark: SparkSession, name: str, columns: list[tuple[str, str]], partitioned_by: list[str]) -> None:
    """Create the table if absent; if present, its columns must be exactly ``columns``."""
    if spark.catalog.tableExists(name):
        actual = [(f.name, f.dataType.simpleString()) for f in spark.table(name).schema.fields]
        if actual != columns:
            raise InputError(
                f"table {name}: expected columns {columns}, got {actual} "
                "(a model with another number of levels or id type needs another table)"
            )
        return
    body = ", ".join(f"`{c}` {t}" for c, t in columns)
    parts = ", ".join(f"`{c}`" for c in partitioned_by)
    spark.sql(f"CREATE TABLE {name} ({body}) USING parquet" + (f" PARTITIONED BY ({parts})" if parts else ""))
    log.info("created table %s", name)


def write_manifest(spark: SparkSession, name: str, row: dict[str, Any]) -> None:
    values = []
    for col, typ in MANIFEST_COLUMNS:
        v = row.get(col)
        if col == "details" and v is not None and not isinstance(v, str):
            v = json.dumps(v, sort_keys=True, default=str)
        values.append(v)
    schema = ", ".join(f"`{c}` {t}" for c, t in MANIFEST_COLUMNS)
    spark.createDataFrame([tuple(values)], schema=schema).coalesce(1).write.insertInto(name, overwrite=False)


def create_views(spark: SparkSession, name: str) -> None:
    """``<name>_versions``: one row per model version, from the manifest: the state of its
    latest run (``complete``, or ``partial`` while a run is unfinished, died or failed), and
    ``<name>_latest``: the rows of the version whose last complete run is the most recent
    (a rerun in progress does not hide the version it is replacing)."""
    m = f"{name}_manifest"
    spark.sql(f"""
        CREATE OR REPLACE VIEW {name}_versions AS
        WITH runs AS (
          SELECT run_id, model_version, mode, started_at,
                 max(finished_at) AS finished_at,
                 CASE WHEN max(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) = 1 THEN 'failed'
                      WHEN max(CASE WHEN status = 'complete' THEN 1 ELSE 0 END) = 1 THEN 'complete'
                      ELSE 'running' END AS run_status,
                 max(rows_in) AS rows_in, max(rows_out) AS rows_out, max(rows_rejected) AS rows_rejected
          FROM {m} GROUP BY run_id, model_version, mode, started_at),
        ranked AS (
          SELECT *, row_number() OVER (PARTITION BY model_version ORDER BY started_at DESC, run_id DESC) AS rn,
                 max(CASE WHEN run_status = 'complete' THEN finished_at END)
                   OVER (PARTITION BY model_version) AS last_complete_at
          FROM runs)
        SELECT model_version,
               CASE WHEN run_status = 'complete' THEN 'complete' ELSE 'partial' END AS status,
               run_status AS last_run_status, run_id AS last_run_id, mode AS last_run_mode,
               started_at, finished_at, rows_in, rows_out, rows_rejected, last_complete_at
        FROM ranked WHERE rn = 1""")
    spark.sql(f"""
        CREATE OR REPLACE VIEW {name}_latest AS
        SELECT t.* FROM {name} t
        WHERE t.model_version = (
          SELECT max_by(model_version, last_complete_at) FROM {name}_versions WHERE last_complete_at IS NOT NULL)""")
