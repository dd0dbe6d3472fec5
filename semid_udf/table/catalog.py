"""The tables and views of a published semantic-ID table, in the metastore (SQL only, so the
same code runs on classic and Spark Connect sessions).

For ``--table DB.NAME`` (or ``CATALOG.DB.NAME``):

- ``NAME_data``: Parquet, partitioned by ``model_version`` and ``run_id``: every run writes its
  rows to a partition of its own. Not for readers: it holds runs that are not (or no longer)
  committed until they are removed.
- ``NAME_rejects``: Parquet, partitioned by ``model_version`` and ``run_id``.
- ``NAME_manifest``: one row per run and state (``running``, ``staged``, ``complete``,
  ``failed``). A ``complete`` row is a commit: it names the runs (``segments``) and files
  whose rows make up the version from then on.
- ``NAME`` (view): the rows of every version's last commit, and nothing else.
- ``NAME_versions`` (view): one row per model version and the state of its latest run.
- ``NAME_latest`` (view): the rows of the version committed most recently.

Names are case-insensitive in the metastore and are used in lower case (so are their folders).
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from semid_udf.spark import schema as sc
from semid_udf.errors import ConfigError, InputError
from semid_udf.paths import uri_path, warehouse_path

log = logging.getLogger(__name__)

_PART = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def lit(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True)
class TableName:
    catalog: str | None
    schema: str
    table: str

    @classmethod
    def parse(cls, text: str) -> "TableName":
        """``NAME``, ``DB.NAME`` or ``CATALOG.DB.NAME`` (letters, digits, _), in lower case."""
        parts = (text or "").split(".")
        if not 1 <= len(parts) <= 3 or not all(_PART.match(p) for p in parts):
            raise ConfigError(f"--table: expected DB.NAME or CATALOG.DB.NAME (letters, digits, _), got {text!r}")
        parts = [p.lower() for p in parts]
        if text != ".".join(parts):
            log.info("table %s is %s in the metastore (names are case-insensitive)", text, ".".join(parts))
        if len(parts) == 1:
            parts = ["default"] + parts
        return cls(parts[0] if len(parts) == 3 else None, parts[-2], parts[-1])

    @property
    def db(self) -> str:
        return f"{self.catalog}.{self.schema}" if self.catalog else self.schema

    def name(self, suffix: str = "") -> str:
        return f"{self.db}.{self.table}{suffix}"

    def q(self, suffix: str = "") -> str:
        """The quoted SQL identifier of this table or a sibling."""
        return ".".join(f"`{p}`" for p in self.name(suffix).split("."))

    def __str__(self) -> str:
        return self.name()


def _rows(spark: SparkSession, sql: str) -> list[Any]:
    return spark.sql(sql).collect()


def check_catalog(spark: SparkSession, name: TableName) -> None:
    """Refuse a three-part name whose catalog this session does not have, listing those it has
    (Spark's own error names a namespace rule instead)."""
    if not name.catalog:
        return
    known = sorted({c.name for c in spark.catalog.listCatalogs()})
    configured = spark.conf.get(f"spark.sql.catalog.{name.catalog}", None)
    if name.catalog not in known and not configured:
        raise ConfigError(f"--table {name}: expected a catalog this session has ({', '.join(known)}, or one set up "
                          f"with spark.sql.catalog.{name.catalog}=...), got {name.catalog!r}")


def check_published(spark: SparkSession, name: TableName, where: str) -> None:
    """Refuse to read ``name`` unless semid published it (its manifest exists), in the user's words."""
    check_catalog(spark, name)
    if not spark.catalog.tableExists(name.name("_manifest")):
        raise ConfigError(f"--table {name}: expected a table semid-assign published in {where}, got none of that "
                          f"name (no {name.name('_manifest')})")


def database_location(spark: SparkSession, name: TableName) -> str:
    row = [r for r in _rows(spark, f"DESCRIBE DATABASE {'.'.join(f'`{p}`' for p in name.db.split('.'))}")
           if r["info_name"] == "Location"]
    return row[0]["info_value"] if row else ""


def same_location(a: str, b: str) -> bool:
    """Two locations as the metastore and a user write them (file: or not, %-encoded or not)."""
    return uri_path(a) == uri_path(b)


def ensure_database(spark: SparkSession, name: TableName, warehouse: str | None) -> None:
    """Create the database (under ``warehouse`` when given); refuse one that lives elsewhere."""
    qdb = ".".join(f"`{p}`" for p in name.db.split("."))
    if not warehouse:
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {qdb}")
        return
    # Hive keeps its own `default` database at the warehouse's root, every other one in <name>.db
    root = Path(warehouse_path(warehouse))
    loc = str(root if name.schema == "default" else root / f"{name.schema}.db")
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {qdb} LOCATION {lit(loc)}")
    actual = database_location(spark, name)
    if not same_location(actual, loc):
        raise ConfigError(f"database {name.db}: expected at {loc} (--warehouse), got an existing one at {actual}")


def table_type(spark: SparkSession, full: str) -> str | None:
    """``VIEW``, ``MANAGED``, ``EXTERNAL`` (or another type), or None when absent."""
    if not spark.catalog.tableExists(full):
        return None
    return str(spark.catalog.getTable(full).tableType).upper()


def _ensure_table(spark: SparkSession, qname: str, full: str, s: sc.Schema, location: str | None) -> None:
    if spark.catalog.tableExists(full):
        actual = [(f.name, f.dataType.simpleString()) for f in spark.table(qname).schema.fields]
        if s is sc.MANIFEST and actual == list(s.columns[:-len(sc.MANIFEST_ADDED)]):  # a manifest of an earlier semid
            spark.sql(f"ALTER TABLE {qname} ADD COLUMNS ({sc.Schema(sc.MANIFEST_ADDED).ddl()})")
            log.info("added columns %s to %s", [c for c, _ in sc.MANIFEST_ADDED], full)
            return
        if actual != list(s.columns):
            raise InputError(f"table {full}: expected columns {list(s.columns)}, got {actual} "
                             "(a model with another number of levels or id type needs another table)")
        return
    parts = ", ".join(f"`{c}`" for c in s.partition_by)
    spark.sql(f"CREATE TABLE IF NOT EXISTS {qname} ({s.ddl()}) USING parquet"
              + (f" PARTITIONED BY ({parts})" if parts else "")
              + (f" LOCATION {lit(location)}" if location else ""))
    log.info("created table %s%s", full, f" at {location}" if location else "")


def ensure_tables(spark: SparkSession, name: TableName, levels: int, id_type: str, location: str | None) -> None:
    """The data, rejects and manifest tables (external under ``location`` when given) and the
    views. Existing tables must have exactly the expected columns."""
    kind = table_type(spark, name.name())
    if kind is not None and kind != "VIEW":
        raise InputError(f"table {name}: expected a view over {name.name('_data')} (how semid publishes), got a "
                         f"{kind} table of that name; publish into another table name")
    ext = (lambda s: f"{location.rstrip('/')}/{name.table}{s}") if location else (lambda s: None)
    _ensure_table(spark, name.q("_data"), name.name("_data"), sc.segments(levels, id_type), ext("_data"))
    _ensure_table(spark, name.q("_rejects"), name.name("_rejects"), sc.REJECTS, ext("_rejects"))
    _ensure_table(spark, name.q("_manifest"), name.name("_manifest"), sc.MANIFEST, ext("_manifest"))
    create_views(spark, name, levels, id_type)


def create_views(spark: SparkSession, name: TableName, levels: int, id_type: str) -> None:
    m, d = name.q("_manifest"), name.q("_data")
    cols = ", ".join(f"d.`{c}`" for c in sc.published(levels, id_type).names)
    # A version's committed state is its complete row with the highest seq (commits of one
    # version are serialised by the writer lock, so seq orders them; COMMIT_ORDER breaks ties).
    _ensure_view(spark, name, "", f"""
        WITH commits AS (
          SELECT model_version, segments,
                 row_number() OVER (PARTITION BY model_version ORDER BY {COMMIT_ORDER_SQL}) AS rn
          FROM {m} WHERE status = 'complete'),
        live AS (SELECT model_version, explode(segments) AS run_id FROM commits WHERE rn = 1)
        SELECT {cols} FROM {d} d LEFT SEMI JOIN live l
          ON d.model_version = l.model_version AND d.run_id = l.run_id""")
    _ensure_view(spark, name, "_versions", f"""
        WITH runs AS (
          SELECT run_id, model_version, first(mode) AS mode, min(started_at) AS started_at,
                 max(finished_at) AS finished_at,
                 CASE WHEN max(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) = 1 THEN 'failed'
                      WHEN max(CASE WHEN status = 'complete' THEN 1 ELSE 0 END) = 1 THEN 'complete'
                      ELSE 'running' END AS run_status,
                 max(rows_in) AS rows_in, max(rows_out) AS rows_out, max(rows_rejected) AS rows_rejected,
                 max(seq) AS seq
          FROM {m} WHERE status IN ('running', 'complete', 'failed') GROUP BY run_id, model_version),
        ranked AS (
          SELECT *, row_number() OVER (PARTITION BY model_version ORDER BY started_at DESC, run_id DESC) AS rn,
                 max(CASE WHEN run_status = 'complete' THEN finished_at END)
                   OVER (PARTITION BY model_version) AS last_complete_at,
                 max(seq) OVER (PARTITION BY model_version) AS last_seq
          FROM runs)
        SELECT model_version,
               CASE WHEN run_status = 'complete' THEN 'complete' ELSE 'partial' END AS status,
               run_status AS last_run_status, run_id AS last_run_id, mode AS last_run_mode,
               started_at, finished_at, rows_in, rows_out, rows_rejected, last_complete_at, last_seq
        FROM ranked WHERE rn = 1""")
    _ensure_view(spark, name, "_latest", f"""
        SELECT t.* FROM {name.q()} t
        WHERE t.model_version = (
          SELECT max_by(model_version, struct(finished_at, seq, run_id)) FROM {m} WHERE status = 'complete')""")
    # The latest version's IDs as a generative model's tokens: level l's code c is token
    # l * codebook_size + c, the suffix s is token levels * codebook_size + s (as semid-export).
    tokens = ", ".join([f"t.`sid_{i}` + {i} * k.size" for i in range(levels)] + [f"t.sid_suffix + {levels} * k.size"])
    _ensure_view(spark, name, "_tokens", f"""
        WITH k AS (
          SELECT DISTINCT model_version, CAST(get_json_object(details, '$.model.codebook_size') AS INT) AS size
          FROM {m} WHERE status = 'complete')
        SELECT t.item_id, t.semantic_id, array({tokens}) AS tokens, t.model_version
        FROM {name.q('_latest')} t JOIN k ON t.model_version = k.model_version""")


def _ensure_view(spark: SparkSession, name: TableName, suffix: str, select: str) -> None:
    """View ``name + suffix`` as ``select``, created only when it is absent or defined
    otherwise (by an earlier semid): Spark replaces a view by dropping it and creating it
    again, so a reader between the two would find no view; an unchanged view is left alone."""
    if spark.catalog.tableExists(name.name(suffix)) and _view_text(spark, name.q(suffix)) == " ".join(select.split()):
        return
    spark.sql(f"CREATE OR REPLACE VIEW {name.q(suffix)} AS {select}")


def _described(spark: SparkSession, qname: str, field: str) -> str | None:
    """One field of ``DESCRIBE TABLE EXTENDED`` (``Location``, ``View Text``), or None."""
    rows = [r for r in spark.sql(f"DESCRIBE TABLE EXTENDED {qname}").collect() if r["col_name"] == field]
    return rows[0]["data_type"] if rows else None


def _view_text(spark: SparkSession, qname: str) -> str | None:
    text = _described(spark, qname, "View Text")
    return " ".join(text.split()) if text is not None else None


def location_of(spark: SparkSession, qname: str) -> str:
    return cast(str, _described(spark, qname, "Location")).rstrip("/")  # every table has one


def partition_spec(model_version: str, run_id: str) -> str:
    return f"model_version = {lit(model_version)}, run_id = {lit(run_id)}"


def partition_dir(model_version: str, run_id: str) -> str:
    """The folder of a partition below its table's location, as Spark and Hive name it."""
    return f"model_version={escape_path_name(model_version)}/run_id={escape_path_name(run_id)}"


_UNSAFE = set('"#%\'*/:=?\\\x7f{[]^') | {chr(i) for i in range(32)}


def escape_path_name(value: str) -> str:
    """Hive's escaping of a partition value in a path (``%XX`` for the characters it reserves)."""
    return "".join(f"%{ord(ch):02X}" if ch in _UNSAFE else ch for ch in value)


def add_partition(spark: SparkSession, qname: str, model_version: str, run_id: str, path: str) -> None:
    spark.sql(f"ALTER TABLE {qname} ADD IF NOT EXISTS PARTITION ({partition_spec(model_version, run_id)}) "
              f"LOCATION {lit(path)}")


def drop_partition(spark: SparkSession, qname: str, model_version: str, run_id: str) -> None:
    spark.sql(f"ALTER TABLE {qname} DROP IF EXISTS PARTITION ({partition_spec(model_version, run_id)})")


def partitions(spark: SparkSession, qname: str, model_version: str) -> list[str]:
    """The run ids registered under ``model_version``."""
    out = []
    for r in spark.sql(f"SHOW PARTITIONS {qname} PARTITION (model_version = {lit(model_version)})").collect():
        spec = dict(kv.split("=", 1) for kv in r[0].split("/"))
        out.append(unquote(spec["run_id"]))
    return out


# ---------------------------------------------------------------------------------------
# The manifest

# The manifest's rows are written by one task each, whose commit moves its one file into the
# manifest's folder (Hadoop's commit algorithm 2, for these writes only): the row appears whole,
# and only from a write whose task committed. Algorithm 1 (Spark's default, right for the data)
# leaves a committed task's file under _temporary/ until the job commits; a process killed in
# between left a row there that the next write to the manifest merged in.
MANIFEST_WRITE = {"mapreduce.fileoutputcommitter.algorithm.version": "2"}


def write_manifest(spark: SparkSession, name: TableName, row: dict[str, Any]) -> None:
    """Append one row: a single small file that appears whole or not at all (``MANIFEST_WRITE``)."""
    values = []
    for col, typ in sc.MANIFEST.columns:
        v = row.get(col)
        if col == "details" and v is not None and not isinstance(v, str):
            v = json.dumps(v, sort_keys=True, default=str)
        values.append(v)
    df = spark.createDataFrame([tuple(values)], schema=sc.MANIFEST.spark())
    location = location_of(spark, name.q("_manifest"))
    sc.MANIFEST.cast(df).coalesce(1).write.mode("append").options(**MANIFEST_WRITE).parquet(location)
    spark.catalog.refreshTable(name.name("_manifest"))  # this session's cached listing of the folder


# Which complete row of a version is its commit: the highest seq; a tie (which one writer per
# version never makes, but a restored or hand-edited manifest can) goes to the later finish,
# then the higher run id, so every reader picks the same row.
COMMIT_ORDER = ("seq", "finished_at", "run_id")  # each descending
COMMIT_ORDER_SQL = ", ".join(f"{c} DESC" for c in COMMIT_ORDER)


def manifest(spark: SparkSession, name: TableName, model_version: str | None = None) -> DataFrame:
    df = spark.table(name.name("_manifest"))
    return df if model_version is None else df.where(F.col("model_version") == model_version)


def last_commit(spark: SparkSession, name: TableName, model_version: str) -> dict[str, Any] | None:
    """The version's committed state: its complete row with the highest seq, or None."""
    row = (manifest(spark, name, model_version).where(F.col("status") == "complete")
           .orderBy(*[F.col(c).desc() for c in COMMIT_ORDER]).limit(1).collect())
    return row[0].asDict() if row else None
