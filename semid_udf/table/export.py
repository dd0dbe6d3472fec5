"""``semid-export``: one committed model version as what a generative recommender trains on.

    <out>/tokens/part-NNNNN.parquet    item_id, tokens (array<int>), semantic_id
    <out>/prefixes/part-NNNNN.parquet  prefix (array<int>), next (array<int>), items (bigint)
    <out>/vocab.json                   levels, codebook size, token offsets, vocabulary size
    <out>/manifest.json                the version and commit, every file's rows and sha256

Tokens: the code of level ``l`` is token ``l * codebook_size + code``; the suffix is token
``levels * codebook_size + suffix``, after the code tokens. ``prefixes`` has one row per prefix
of every length from 0 (the empty prefix) to ``levels`` (a full code tuple, whose ``next``
are its suffix tokens), with the tokens that may follow it (sorted) and how many items lie
under it: what a constrained beam search loads. Full IDs are the rows of ``tokens``.

Written with Spark (the aggregations and the writes run in its tasks, so it scales with the
table), into files whose names and bytes depend only on the committed rows: rows go to a
file by a hash of their key, sorted within it, and each task writes its files with pyarrow
under fixed names. The same commit exported twice gives byte-identical files.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import math
from typing import Any, Callable, Iterator, cast

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from semid_udf.table import catalog as ct
from semid_udf.spark import schema as sc
from semid_udf.errors import ConfigError
from semid_udf.spark.files import Files
from semid_udf.paths import is_local, local_path

log = logging.getLogger(__name__)

ROWS_PER_FILE = 1_000_000
ROW_GROUP = 100_000
_FILES = "file string, rows bigint, bytes bigint, sha256 string"


def _writer(folder: str, schema: pa.Schema) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """For ``mapInArrow`` over rows sorted by ``_file`` then key: one Parquet file per
    ``_file`` value, written with fixed options under a fixed name; one row per file out."""
    import pyarrow.fs as pafs

    def write(number: int, batches: list[pa.RecordBatch]) -> pa.RecordBatch:
        table = pa.Table.from_batches(batches).drop_columns(["_file"]).cast(schema)
        buf = io.BytesIO()
        pq.write_table(table, buf, row_group_size=ROW_GROUP, compression="zstd", write_statistics=True)
        data = buf.getvalue()
        name = f"part-{number:05d}.parquet"
        fs, path = pafs.FileSystem.from_uri(folder) if "://" in folder else (pafs.LocalFileSystem(), folder)
        with fs.open_output_stream(f"{path}/{name}") as f:
            f.write(data)
        return pa.RecordBatch.from_pydict({"file": [name], "rows": [table.num_rows], "bytes": [len(data)],
                                           "sha256": [hashlib.sha256(data).hexdigest()]})

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        current, held = None, []
        for b in batches:
            files = b.column("_file").to_numpy()
            start = 0
            while start < b.num_rows:
                value = int(files[start])
                end = start
                while end < b.num_rows and files[end] == value:
                    end += 1
                if current is not None and value != current:
                    yield write(current, held)
                    held = []
                current = value
                held.append(b.slice(start, end - start))
                start = end
        if current is not None:
            yield write(current, held)

    return run


def write_files(df: DataFrame, folder: str, key: list[str], rows: int, schema: pa.Schema) -> list[dict[str, Any]]:
    """``df`` as Parquet files in ``folder``: a row's file is a hash of its key, files sorted
    by key; returns each file's name, rows, bytes and sha256, sorted by name."""
    n = max(1, math.ceil(rows / ROWS_PER_FILE))
    files = F.pmod(F.xxhash64(*key), F.lit(n)).cast("int")
    ordered = df.withColumn("_file", files).repartition(n, "_file").sortWithinPartitions("_file", *key)
    out = [r.asDict() for r in ordered.mapInArrow(_writer(folder, schema), _FILES).collect()]
    return sorted(out, key=lambda r: r["file"])


def export(spark: SparkSession, name: ct.TableName, out: str, version: str | None = None,
           where: str = "this session's catalog") -> dict[str, Any]:
    """Export the last commit of ``version`` (default: the latest committed version);
    ``where`` names the warehouse or catalog in errors."""
    ct.check_published(spark, name, where)
    runs = ct.manifest(spark, name).where(F.col("status") == "complete")
    if version is not None:
        runs = runs.where(F.col("model_version") == version)
    last = runs.orderBy(F.col("finished_at").desc(), F.col("seq").desc(), F.col("run_id").desc()).limit(1).collect()
    if not last:
        known = sorted({r[0] for r in ct.manifest(spark, name).where(F.col("status") == "complete")
                        .select("model_version").distinct().collect()})
        raise ConfigError(f"--version: expected a committed model version of {name} ({', '.join(known) or 'none'}), "
                          f"got {version}")
    commit = last[0].asDict()
    version = commit["model_version"]
    model = json.loads(commit["details"])["model"]
    levels, size = int(model["levels"]), int(model["codebook_size"])
    sids = sc.sid_cols(levels)
    # The commit's own files (as every reader follows them): a later commit meanwhile changes nothing here.
    root = ct.location_of(spark, name.q("_data"))
    rows = spark.read.parquet(*[f"{root}/{f}" for f in commit["files"]]).select("item_id", *sids, "sid_suffix",
                                                                                 "semantic_id")
    out = _absolute(out)
    tokens = F.array(*[(F.col(c) + F.lit(i * size)).cast("int") for i, c in enumerate(sids)],
                     (F.col("sid_suffix") + F.lit(levels * size)).cast("int"))
    tok = rows.select("item_id", tokens.alias("tokens"), "semantic_id").persist()
    try:
        n_items = tok.count()
        if n_items != commit["rows_out"]:
            raise ConfigError(f"model version {version}: expected {commit['rows_out']} rows (its last commit), read "
                              f"{n_items}")
        id_type = dict((f.name, f.dataType.simpleString()) for f in rows.schema.fields)["item_id"]
        files = Files(spark)
        # A stale export must not mix with this one. manifest.json goes first: an export without
        # it is incomplete, so a clean-up cut short never leaves one beside deleted files.
        for part in ("manifest.json", "tokens", "prefixes", "vocab.json"):
            files.delete(f"{out}/{part}")
        log.info("exporting %d items of %s version %s to %s", n_items, name, version, out)
        _mkdir(out)
        tok_schema = pa.schema([("item_id", sc._ARROW[id_type]), ("tokens", pa.list_(pa.int32())),
                                ("semantic_id", pa.string())])
        _mkdir(f"{out}/tokens")
        tok_files = write_files(tok, f"{out}/tokens", ["item_id"], n_items, tok_schema)
        prefixes = None
        for length in range(levels + 1):  # prefixes of every length, and the tokens that follow each
            p = tok.groupBy(F.slice("tokens", 1, length).alias("prefix") if length else F.array().cast(
                "array<int>").alias("prefix")).agg(F.sort_array(F.collect_set(F.col("tokens")[length])).alias("next"),
                                                   F.count(F.lit(1)).alias("items"))
            prefixes = p if prefixes is None else prefixes.unionByName(p)
        prefixes = cast(DataFrame, prefixes).persist()  # set by the loop (levels + 1 >= 1 lengths)
        n_prefixes = prefixes.count()
        pre_schema = pa.schema([("prefix", pa.list_(pa.int32())), ("next", pa.list_(pa.int32())),
                                ("items", pa.int64())])
        _mkdir(f"{out}/prefixes")
        pre_files = write_files(prefixes, f"{out}/prefixes", ["prefix"], n_prefixes, pre_schema)
        prefixes.unpersist(blocking=True)
        max_suffix = int(cast(Row, rows.agg(F.max("sid_suffix")).first())[0])  # an aggregate: one row
    finally:
        tok.unpersist(blocking=True)
    vocab = {"table": str(name), "model_version": version, "levels": levels, "codebook_size": size,
             "max_suffix": max_suffix, "offsets": {**{f"level_{i}": i * size for i in range(levels)},
                                                   "suffix": levels * size},
             "vocab_size": levels * size + max_suffix + 1, "commit": {"run_id": commit["run_id"], "seq": commit["seq"],
                                                                     "segments": list(commit["segments"])}}
    vocab_text = json.dumps(vocab, indent=2, sort_keys=True) + "\n"
    _write_text(f"{out}/vocab.json", vocab_text)
    manifest = {"table": str(name), "model_version": version, "commit": vocab["commit"], "items": n_items,
                "prefixes": n_prefixes,
                "files": [{"path": f"tokens/{f['file']}", **{k: f[k] for k in ("rows", "bytes", "sha256")}}
                          for f in tok_files]
                + [{"path": f"prefixes/{f['file']}", **{k: f[k] for k in ("rows", "bytes", "sha256")}}
                   for f in pre_files]
                + [{"path": "vocab.json", "rows": None, "bytes": len(vocab_text.encode()),
                    "sha256": hashlib.sha256(vocab_text.encode()).hexdigest()}]}
    _write_text(f"{out}/manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")  # last: the export is whole
    return manifest


def _absolute(uri: str) -> str:
    """A local path made absolute (the tasks that write it run in other directories)."""
    return local_path(uri) or uri


def _mkdir(uri: str) -> None:
    import pyarrow.fs as pafs

    fs, path = (pafs.LocalFileSystem(), local_path(uri)) if is_local(uri) else pafs.FileSystem.from_uri(uri)
    fs.create_dir(path, recursive=True)


def _write_text(uri: str, text: str) -> None:
    import pyarrow.fs as pafs

    fs, path = (pafs.LocalFileSystem(), local_path(uri)) if is_local(uri) else pafs.FileSystem.from_uri(uri)
    with fs.open_output_stream(path) as f:
        f.write(text.encode())
