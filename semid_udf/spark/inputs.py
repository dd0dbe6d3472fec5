"""Where the embeddings come from: a planned Parquet input read by pyarrow in the tasks, or a
Spark DataFrame (Spark's reader, a metastore table, or the user's own DataFrame).

Both give the encode step ``(item_id, embedding)`` rows with the same ids, the same checks
and the same codes; see :mod:`semid_udf.worker.reader` for the pyarrow side.
"""
from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass
from typing import Any, cast

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from semid_udf.config import InputConfig
from semid_udf.errors import ConfigError, InputError, one_line
from semid_udf.spark.files import is_connect
from semid_udf import vectors
from semid_udf.paths import is_local
from semid_udf.worker.reader import FetchPlan, InputPlan, plan_input

log = logging.getLogger(__name__)

_ARROW_ID = {pa.int32(): "int", pa.int64(): "bigint", pa.string(): "string"}


@dataclass
class Source:
    """The input as the encode step sees it."""

    id_type: str  # int, bigint or string: the published item_id type
    plan: InputPlan | None = None  # pyarrow opens and decodes the files in the tasks
    fetched: tuple[FetchPlan, DataFrame] | None = None  # Spark fetches whole files (binaryFile rows), pyarrow decodes
    frame: DataFrame | None = None  # (item_id, embedding), from Spark
    rows: int | None = None  # known up front (Parquet footers), or None
    description: str = ""


def cores(spark: SparkSession) -> int:
    """Task slots the session can use at once: Spark's default parallelism on a classic
    session; on Spark Connect (no SparkContext) ``spark.default.parallelism`` when set, else
    the N of a ``local[N]`` master, else this machine's CPU count (logged)."""
    if not is_connect(spark):
        return int(spark.sparkContext.defaultParallelism)
    given = spark.conf.get("spark.default.parallelism", None)
    if given:
        return int(given)
    master = spark.conf.get("spark.master", "") or ""
    m = re.match(r"local\[(\d+|\*)", master)
    if m and m.group(1) != "*":
        return int(m.group(1))
    n = os.cpu_count() or 1
    if not master.startswith("local"):
        log.info("Spark Connect: the cluster's core count is not visible to the client; sizing partitions for %d cores "
                 "(set spark.default.parallelism to say otherwise)", n)
    return n


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "g": 1 << 30, "gb": 1 << 30,
          "t": 1 << 40, "tb": 1 << 40}


def byte_size(text: str) -> int:
    """Spark's byte strings: ``134217728``, ``128m``, ``128MB``, ``1g``."""
    m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ConfigError(f"expected a byte size such as 128m, got {text!r}")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def max_partition_bytes(spark: SparkSession) -> int:
    return byte_size(spark.conf.get("spark.sql.files.maxPartitionBytes", "128m") or "128m")


def shuffle_partitions(spark: SparkSession, rows: int) -> None:
    """Unless the user set it, size spark.sql.shuffle.partitions from the input: Spark's 200
    made every small shuffle of ids and codes cost hundreds of tasks; too few would make
    each sort of a huge input one task. 2 per core, and at least one per 2M rows."""
    if _user_set(spark, "spark.sql.shuffle.partitions"):
        return
    n = max(2 * cores(spark), math.ceil(rows / 2_000_000))
    spark.conf.set("spark.sql.shuffle.partitions", str(n))
    log.info("spark.sql.shuffle.partitions = %d for %d input rows", n, rows)


def _user_set(spark: SparkSession, key: str) -> bool:
    if not is_connect(spark):
        return spark.sparkContext.getConf().contains(key) or spark.conf.get(key, None) != "200"
    return spark.conf.get(key, None) not in (None, "200")


def read_source(spark: SparkSession, ic: InputConfig, input_path: str | None = None, input_table: str | None = None,
                frame: DataFrame | None = None) -> Source:
    """``input.reader``: arrow decodes the Parquet in the Python tasks (only Python touches the
    vectors); spark reads it with Spark; auto picks arrow for Parquet paths and plain-Parquet
    tables. ``input.fetch`` says who opens the files pyarrow decodes (:func:`fetcher`). A
    DataFrame ``frame`` is used as it is."""
    if frame is not None:
        f, id_type = normalise_frame(frame, ic)
        return Source(id_type, frame=f, description="a DataFrame")
    files: list[str] | None = None
    if input_table is not None and ic.reader != "spark":
        files, why_not = parquet_table_files(spark, input_table, (ic.id_col, ic.embedding_col))
        if files is None:
            if ic.reader == "arrow":
                raise ConfigError(f"input.reader=arrow: table {input_table} cannot be read with pyarrow: {why_not}; "
                                  "use input.reader=spark or auto")
            log.info("reader: Spark for table %s (%s)", input_table, why_not)
    source = input_path or cast(str, input_table)  # one of them (the CLI and read_source's callers check)
    if ic.reader == "arrow" or (ic.reader == "auto" and (input_path is not None or files is not None)):
        local = all(is_local(f) for f in files) if files is not None else is_local(source)
        if fetcher(ic, local) == "spark":
            fetched = fetch_source(spark, ic, input_path, input_table, files)
            if fetched is not None:
                return fetched
        else:
            if files is not None and not local:
                raise ConfigError(f"input.fetch=pyarrow: table {input_table}'s files are not on a local or mounted path "
                                  f"(e.g. {next(f for f in files if not is_local(f))}); use input.fetch=spark or auto")
            target = max_partition_bytes(spark)
            plan = plan_input(source, ic.id_col, ic.embedding_col, ic.cast_double, target_bytes=target,
                              cores=cores(spark), binary_dtype=ic.binary_dtype, files=files)
            log.info("reader: pyarrow in the tasks (%d units of up to %d MB)", len(plan.units), target >> 20)
            return Source(_ARROW_ID[plan.id_type], plan=plan, rows=plan.rows, description=source)
    raw = read_input(spark, input_path, input_table)
    f, id_type = normalise_frame(raw, ic)
    log.info("reader: Spark")
    rows = raw.count() if input_path is not None else None  # Parquet footers: no scan of the vectors
    return Source(id_type, frame=f, rows=rows, description=source)


def fetcher(ic: InputConfig, local: bool) -> str:
    """Who opens the files pyarrow decodes: ``pyarrow`` (local and mounted paths, or pyarrow's
    own file systems for other URIs) or ``spark`` (Spark's binaryFile source fetches them
    whole, with Spark's file systems and credentials); ``input.fetch=auto`` picks pyarrow for
    local and mounted files and Spark for every other URI."""
    if ic.fetch != "auto":
        return ic.fetch
    return "pyarrow" if local else "spark"


def fetch_source(spark: SparkSession, ic: InputConfig, input_path: str | None, input_table: str | None,
                 files: list[str] | None) -> Source | None:
    """The input as whole files that Spark fetches (its ``binaryFile`` source) and pyarrow
    decodes in the tasks. The driver lists the files (names, sizes, times; no content) and
    takes the id type and the row count from Spark's reading of the Parquet footers, so the
    published types, checks and messages are those of Spark's reader. A task holds the files
    of its split whole (Spark packs files into splits of about spark.sql.files.maxPartitionBytes;
    a larger file is a split of its own): a file over ``input.fetch_max_file_mb`` sends the
    input to Spark's reader under ``input.reader=auto`` (None is returned) and is an error
    under ``arrow``."""
    source = input_path or cast(str, input_table)
    try:
        raw = read_input(spark, input_path, input_table)
    except InputError as e:
        if "FLOAT16" not in str(e):
            raise
        raise InputError(f"input {source}: Spark's Parquet reader, which plans an input whose files Spark fetches, has "
                         "no float16; use input.fetch=pyarrow (pyarrow opens local and mounted paths, and other URIs "
                         "with its own file systems)") from e
    _, id_type = normalise_frame(raw, ic)  # the column checks and messages of Spark's reader
    reader = spark.read.format("binaryFile")
    whole = reader.load(input_path) if input_path is not None else reader.load(cast(list, files))
    listing = [(str(r[0]), int(r[1]), int(r[2])) for r in
               whole.select("path", "length", F.unix_micros("modificationTime")).collect()]
    if not listing:
        raise InputError(f"input {source}: expected Parquet files, found none (names starting with _ or . are skipped)")
    limit = ic.fetch_max_file_mb << 20
    big = max(listing, key=lambda f: f[1])
    if big[1] > limit:
        why = (f"file {big[0]} has {big[1] >> 20} MB, over input.fetch_max_file_mb={ic.fetch_max_file_mb} "
               "(a task holds a fetched file whole)")
        if ic.reader == "arrow":
            raise ConfigError(f"input.fetch=spark: {why}; raise the limit (at most 2047), or use input.reader=spark")
        log.info("reader: Spark for %s (%s)", source, why)
        return None
    arrow_id = next(t for t, name in _ARROW_ID.items() if name == id_type)
    plan = FetchPlan(source, tuple(sorted(listing)), arrow_id, ic.id_col, ic.embedding_col, ic.cast_double,
                     ic.binary_dtype)
    rows = raw.count()  # Parquet footers: no scan of the vectors
    log.info("reader: pyarrow in the tasks, files fetched by Spark (%d files, %d rows, largest %d MB)", len(listing),
             rows, big[1] >> 20)
    return Source(id_type, fetched=(plan, whole), rows=rows, description=source)


def parquet_table_files(spark: SparkSession, table: str, columns: tuple[str, ...]) -> tuple[list[str] | None, str]:
    """The data files of a metastore table stored as plain Parquet, as its catalog names them
    (its registered partitions only), for the pyarrow reader; or None and why not: a view,
    another format (Delta and the like: deletion vectors, column mapping), no files, or the id
    or embedding column being a partition column (not in the files)."""
    try:
        rows = spark.sql(f"DESCRIBE TABLE EXTENDED {table}").collect()
    except Exception as e:  # a missing table and the like: Spark's reader says it (read_input)
        return None, f"not described by the catalog ({type(e).__name__})"
    info: dict[str, str] = {}
    partitions: set[str] = set()
    section = ""
    for r in rows:
        name, value = str(r[0] or "").strip(), str(r[1] or "").strip()
        if name.startswith("#"):
            section = section if name == "# col_name" else name  # "# col_name": a section's header row
            continue
        if section == "# Partition Information" and name:
            partitions.add(name)
        elif section.startswith("# Detailed Table Information") and name:
            info[name] = value
    provider, serde = info.get("Provider", "").lower(), info.get("Serde Library", "").lower()
    if info.get("Type", "").upper() == "VIEW":
        return None, "a view"
    if not (provider == "parquet" or (provider == "hive" and "parquet" in serde)):
        return None, f"stored as {provider or 'an unknown format'}, not plain Parquet"
    if partitions & {c.split(".")[0] for c in columns}:
        return None, f"the id or embedding column is a partition column ({sorted(partitions)})"
    files = spark.table(table).inputFiles()
    if not files:
        return None, "no files"
    return sorted(files), ""


def read_input(spark: SparkSession, path: str | None, table: str | None) -> DataFrame:
    try:
        df = spark.read.parquet(path) if path else spark.table(cast(str, table))  # None: Spark's error, re-raised below
        df.schema  # Spark Connect analyses lazily: make a missing path or table fail here
        return df
    except Exception as e:  # AnalysisException and friends: re-raised with the input named
        first = one_line(e) if getattr(e, "java_exception", None) is not None else (
            str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
        hint = (" (Spark's Parquet reader has no float16; input.reader=arrow reads it with pyarrow)"
                if "FLOAT16" in str(e) else "")
        raise InputError(f"input {path or table}: cannot read it: {first}{hint}") from e


def _field(schema: T.StructType, path: str) -> T.DataType | None:
    """The type of a (possibly nested, dotted) column, or None."""
    t: T.DataType = schema
    for part in path.split("."):
        if not isinstance(t, T.StructType) or part not in t.fieldNames():
            return None
        t = t[part].dataType
    return t


def _col(path: str) -> Any:
    return F.col(".".join(f"`{p}`" for p in path.split(".")))


def arrow_type(t: T.DataType) -> pa.DataType | None:
    """The Arrow type a Spark type reaches the Python workers as (an ML vector: its struct), so
    that :mod:`semid_udf.vectors` judges both readers' columns by one policy; None when Arrow has
    no such type."""
    from pyspark.sql.pandas.types import to_arrow_type

    if isinstance(t, T.UserDefinedType):
        t = t.sqlType()
    try:
        return to_arrow_type(t)
    except Exception:  # a type Arrow cannot carry (e.g. a map of structs): not an accepted type either
        return None


def normalise_frame(df: DataFrame, ic: InputConfig) -> tuple[DataFrame, str]:
    """``(item_id, embedding)`` of ``df`` and the id type, or an error naming the column, the
    expected and the actual type (the policy of :mod:`semid_udf.vectors`). ``array<double>`` is
    cast to ``array<float>`` in Spark (half the bytes handed to Python); dense ML vectors and
    binary blobs are decoded in Python (:mod:`semid_udf.worker.arrow`)."""
    schema = df.schema
    id_type, emb_type = _field(schema, ic.id_col), _field(schema, ic.embedding_col)
    for col, what, t in ((ic.id_col, "the item id", id_type), (ic.embedding_col, "the embedding", emb_type)):
        if t is None:
            raise InputError(f"column {col!r} ({what}) missing; columns found: {sorted(schema.fieldNames())}")
    id_type, emb_type = cast(T.DataType, id_type), cast(T.DataType, emb_type)  # neither is None (checked above)
    id_arrow = arrow_type(id_type)
    if id_arrow is None:
        raise InputError(f"column {ic.id_col!r}: expected bigint, int or string, got {id_type.simpleString()}")
    id_norm = {pa.int32(): T.IntegerType(), pa.int64(): T.LongType(), pa.string(): T.StringType()}[
        vectors.id_type(id_arrow, ic.id_col, actual=id_type.simpleString())]
    ids = _col(ic.id_col)
    if id_norm != id_type:  # widened, as the pyarrow reader does
        ids, id_type = ids.cast(id_norm), id_norm
    emb = _col(ic.embedding_col)
    emb_arrow = arrow_type(emb_type)
    why = (vectors.embedding_type_error(emb_arrow, ic.embedding_col, ic.binary_dtype, ic.cast_double,
                                         actual=emb_type.simpleString())
           if emb_arrow is not None else vectors.unsupported_embedding(ic.embedding_col, emb_type.simpleString()))
    if why:
        raise InputError(why)
    if isinstance(emb_type, T.ArrayType) and isinstance(emb_type.elementType, T.DoubleType):
        log.info("casting %s from array<double> to array<float> (input.cast_double)", ic.embedding_col)
        emb = emb.cast(T.ArrayType(T.FloatType()))
    return df.select(ids.alias("item_id"), emb.alias("embedding")), id_type.simpleString()
