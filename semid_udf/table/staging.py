"""Resumable encoding: deterministic shards, each committed as it finishes.

With ``output.shards = S > 1`` the encode step runs as S Spark jobs, one per shard: with the
pyarrow reader, every S-th read unit (row groups of one file); with Spark's reader, the
rows with ``pmod(xxhash64(item_id), S) = k``. Each shard's encoded rows are written under
``<data location>/_staging/<fingerprint>/`` (a folder of this attempt's own), then a
``staged`` row in the manifest commits it. A rerun with the same fingerprint (same input
files, model version, encode settings and shard count) skips the shards the manifest names
and computes the rest; everything after the encode step reads the staged rows. The staging
folder is deleted once the run is complete; other fingerprints' folders (killed runs over
another input) are reported.

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
from pyspark.sql import functions as F

from semid_udf.table import catalog as ct
from semid_udf.spark.files import Files

log = logging.getLogger(__name__)


def fingerprint(stamps: list[tuple[str, int, int]] | list[str], source: str, model_version: str, settings: dict[str, Any],
                shards: int) -> str:
    """Same input files (path, size, mtime), model, encode settings and shard count -> same value."""
    doc = {"source": source, "files": stamps, "model_version": model_version, "settings": settings, "shards": shards}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def staged(spark: SparkSession, name: ct.TableName, model_version: str, fp: str) -> dict[int, str]:
    """Shard -> folder of the shards the manifest records as staged for fingerprint ``fp``."""
    out: dict[int, str] = {}
    rows = ct.manifest(spark, name, model_version).where(F.col("status") == "staged").select("details").collect()
    for r in rows:
        d = json.loads(r["details"])
        if d.get("fingerprint") == fp:
            out[int(d["shard"])] = d["path"]
    return out


def encode_sharded(spark: SparkSession, name: ct.TableName, base_row: dict[str, Any], shard: Callable[[int, int], DataFrame],
                   shards: int, root: str, fp: str, schema: Any, step: Callable[[str], None]
                   ) -> tuple[DataFrame, dict[str, Any]]:
    """Encode shard by shard (``shard(k, shards)`` is shard k's encoded rows) into
    ``root/fp``; return the staged rows and a report."""
    done = staged(spark, name, base_row["model_version"], fp)
    skipped, computed, paths = [], [], []
    for k in range(shards):
        if k in done:
            skipped.append(k)
            paths.append(done[k])
            log.info("shard %d/%d already committed (%s): skipping", k + 1, shards, done[k])
            continue
        step(f"encoding shard {k + 1}/{shards}")
        where = f"{root}/{fp}/shard-{k}-{base_row['run_id']}"
        shard(k, shards).write.mode("overwrite").parquet(where)
        ct.write_manifest(spark, name, {**base_row, "status": "staged",
                                        "details": {"fingerprint": fp, "shard": k, "of": shards, "path": where}})
        computed.append(k)
        paths.append(where)
    orphans = [n for n in (Files(spark).children(root) or []) if n != fp]
    if orphans:
        log.warning("staging folders of other (killed or changed) runs under %s: %s; delete them when no run needs them",
                    root, orphans)
    coded = spark.read.schema(schema).parquet(*paths)
    return coded, {"shards": shards, "skipped": skipped, "computed": computed, "staging": f"{root}/{fp}",
                   "orphans": orphans}
