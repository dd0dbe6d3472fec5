"""Resumable encoding: deterministic item-id hash shards, each committed to staging.

With ``output.shards = S > 1`` the encode step runs as S Spark jobs, one per shard: with the
pyarrow reader, every S-th read unit (row groups of one file); with Spark's reader, the
rows with ``pmod(xxhash64(item_id), S) = k``. Each shard's codes are written to
``<table location>_semid_staging/<fingerprint>/shard=k/`` and then marked committed by a
``_SEMID_COMMITTED`` file. A rerun with the same fingerprint (same input files, model version
and encode settings) skips committed shards and computes the rest; everything after the
encode step reads the staged codes. The run's staging folder is deleted once its manifest is
complete; other fingerprints' folders (killed runs over another input) are reported.

Cost: with the pyarrow reader, none beyond the staging writes (each shard reads only its
own row groups). With Spark's reader each shard scans the input again (Parquet cannot skip
rows by a hash of the id), so S shards read the vectors S times.
"""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, Callable

from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)
MARKER = "_SEMID_COMMITTED"


class Fs:
    """The few Hadoop FileSystem calls staging needs (works for file:, hdfs:, s3a:, dbfs:)."""

    def __init__(self, spark: SparkSession):
        self.jvm = spark.sparkContext._jvm
        self.conf = spark.sparkContext._jsc.hadoopConfiguration()

    def _p(self, path: str):
        p = self.jvm.org.apache.hadoop.fs.Path(path)
        return p, p.getFileSystem(self.conf)

    def exists(self, path: str) -> bool:
        p, fs = self._p(path)
        return bool(fs.exists(p))

    def write_text(self, path: str, text: str) -> None:
        p, fs = self._p(path)
        out = fs.create(p, True)
        try:
            out.write(bytearray(text.encode()))
        finally:
            out.close()

    def read_text(self, path: str) -> str:
        p, fs = self._p(path)
        stream = fs.open(p)
        try:
            return self.jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
        finally:
            stream.close()

    def delete(self, path: str) -> None:
        p, fs = self._p(path)
        fs.delete(p, True)

    def children(self, path: str) -> list[str]:
        p, fs = self._p(path)
        if not fs.exists(p):
            return []
        return sorted(s.getPath().getName() for s in fs.listStatus(p))

    def file_stamp(self, path: str) -> tuple[int, int]:
        p, fs = self._p(path)
        st = fs.getFileStatus(p)
        return int(st.getLen()), int(st.getModificationTime())


def table_location(spark: SparkSession, name: str) -> str:
    rows = spark.sql(f"DESCRIBE TABLE EXTENDED {name}").where("col_name = 'Location'").collect()
    return rows[0]["data_type"].rstrip("/")


def fingerprint(stamps: list[tuple[str, int, int]], source: str, model_version: str, settings: dict[str, Any],
                shards: int) -> str:
    """Same input files (path, size, mtime), model, encode settings and shard count -> same value."""
    doc = {"source": source, "files": stamps, "model_version": model_version, "settings": settings, "shards": shards}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def encode_sharded(spark: SparkSession, shard: Callable[[int, int], DataFrame], shards: int,
                   root: str, fp: str, step: Callable[[str], None]) -> tuple[DataFrame, dict[str, Any]]:
    """Encode shard by shard (``shard(k, shards)`` is shard k's coded rows) into ``root/fp``;
    return the staged codes and a report."""
    fs = Fs(spark)
    base = f"{root}/{fp}"
    skipped, computed = [], []
    for k in range(shards):
        where = f"{base}/shard={k}"
        if fs.exists(f"{where}/{MARKER}"):
            skipped.append(k)
            log.info("shard %d/%d already committed (%s): skipping", k + 1, shards, where)
            continue
        step(f"encoding shard {k + 1}/{shards}")
        shard(k, shards).write.mode("overwrite").parquet(where)
        fs.write_text(f"{where}/{MARKER}", json.dumps({"shard": k, "of": shards}))
        computed.append(k)
    orphans = [name for name in fs.children(root) if name != fp]
    if orphans:
        log.warning("staging folders of other (killed or changed) runs under %s: %s; delete them when no run needs them",
                    root, orphans)
    coded = spark.read.parquet(base).drop("shard")
    return coded, {"shards": shards, "skipped": skipped, "computed": computed, "staging": base, "orphans": orphans}


def clean(spark: SparkSession, path: str) -> None:
    Fs(spark).delete(path)
