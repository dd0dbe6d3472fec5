"""New items as they arrive: Structured Streaming over a file or table source, each
micro-batch published as an append run (``semid-assign --stream``).

Per micro-batch (``foreachBatch``): the items of the batch that the model version does not
have yet get IDs with the append rules (published IDs never move, suffixes continue per
code tuple; the very first batch of a version that has no commit yet starts it), written
and committed exactly as a ``semid-assign`` run is (see :mod:`semid_udf.publish`). The
commit's manifest row records the stream (its checkpoint location) and the micro-batch id;
a micro-batch that Spark replays after a restart (it re-runs the last batch whose end it did
not record) finds its id committed and changes nothing: exactly once. The stream holds the
version's writer lock for as long as it runs: a second stream, or an append run, on the same
version waits ``output.lock_wait_s`` and fails, naming the stream.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from . import catalog as ct
from .api import as_checkpoint, build, probe
from .config import JobConfig, to_dict
from .errors import ConfigError
from .files import is_connect
from .inputs import normalise_frame, read_source
from .locks import VersionLock
from .publish import (RunRecord, RunResult, Stages, _clean, _committed_rows, _previous_commit, _publish, bounded,
                      library_versions, model_digest, new_run_id, utcnow)

log = logging.getLogger(__name__)


def stream_id(checkpoint_location: str) -> str:
    return hashlib.sha256(checkpoint_location.rstrip("/").encode()).hexdigest()[:16]


def last_batch(spark: SparkSession, name: ct.TableName, version: str, sid: str) -> int | None:
    """The highest micro-batch id of stream ``sid`` committed to the version, or None."""
    row = (ct.manifest(spark, name, version).where(F.col("status") == "complete")
           .where(F.get_json_object("details", "$.stream.id") == sid)
           .agg(F.max(F.get_json_object("details", "$.stream.batch_id").cast("long"))).first())
    return None if row is None or row[0] is None else int(row[0])


def run_stream(spark: SparkSession, cfg: JobConfig, checkpoint: Any, *, table: str, checkpoint_location: str,
               input_path: str | None = None, input_table: str | None = None, warehouse: str | None = None,
               location: str | None = None, trigger: str = "available-now") -> list[RunResult]:
    """Run the stream until it ends (``available-now``: every file or row there now, then
    stop) or fails (any other trigger, e.g. ``30 seconds``, runs until stopped)."""
    ckpt = as_checkpoint(checkpoint)
    name = ct.TableName.parse(table)
    version, levels = ckpt.model_version, int(ckpt.model["levels"])
    location = location or cfg.output.location or None
    timeout = float(cfg.output.metastore_timeout_s)
    probe(ckpt, cfg)
    digest = model_digest(ckpt, cfg)
    if input_path is not None:
        schema = spark.read.parquet(input_path).schema  # a file stream needs its schema up front
        reader = spark.readStream.schema(schema)
        if cfg.input.files_per_trigger:
            reader = reader.option("maxFilesPerTrigger", cfg.input.files_per_trigger)
        source = reader.parquet(input_path)
    elif input_table is not None:
        source = spark.readStream.table(input_table)
    else:
        raise ConfigError("--stream: expected --input PATH or --input-table NAME")
    _, id_type = normalise_frame(source, cfg.input)  # checks the columns now, before anything is written
    sid = stream_id(checkpoint_location)
    lock_id = f"stream-{sid}-{new_run_id()}"
    bounded("creating the database", timeout, lambda: ct.ensure_database(spark, name, warehouse))
    lock = VersionLock(spark, name, version, lock_id, cfg.output.lock_wait_s)
    bounded("taking the writer lock", timeout + cfg.output.lock_wait_s, lock.acquire)
    results: list[RunResult] = []
    try:
        _previous_commit(spark, name, version, digest, "full", timeout)  # the binding, before any batch
        bounded("creating the tables", timeout, lambda: ct.ensure_tables(spark, name, levels, id_type, location))

        def batch(df: DataFrame, batch_id: int) -> None:
            res = _batch(spark, cfg, ckpt, name, digest, df, batch_id, sid, checkpoint_location, lock, timeout)
            if res is not None:
                results.append(res)

        writer = source.writeStream.foreachBatch(batch).option("checkpointLocation", checkpoint_location)
        writer = writer.trigger(availableNow=True) if trigger == "available-now" else writer.trigger(
            processingTime=trigger)
        query = writer.queryName(f"semid-{name.table}-{version}"[:60]).start()
        log.info("stream %s (checkpoint %s) -> %s version %s, trigger %s", sid, checkpoint_location, name, version,
                 trigger)
        query.awaitTermination()
    finally:
        lock.release()
    return results


def _batch(spark: SparkSession, cfg: JobConfig, ckpt: Any, name: ct.TableName, digest: str, df: DataFrame,
           batch_id: int, sid: str, checkpoint_location: str, lock: VersionLock, timeout: float) -> RunResult | None:
    version, levels = ckpt.model_version, int(ckpt.model["levels"])
    done = last_batch(spark, name, version, sid)
    if done is not None and batch_id <= done:
        log.info("micro-batch %d of stream %s is already committed (up to %d): nothing to do", batch_id, sid, done)
        return None
    if df.isEmpty():
        log.info("micro-batch %d of stream %s is empty: nothing to do", batch_id, sid)
        return None
    previous = _previous_commit(spark, name, version, digest, "full", timeout)
    mode = "append" if previous else "full"
    res = RunResult(run_id=new_run_id(), model_version=version, table=str(name), mode=mode)
    step = Stages(spark, res)
    t0 = time.perf_counter()
    try:
        source = read_source(spark, cfg.input, frame=df)
        step(f"micro-batch {batch_id}: encoding")
        stream = {"id": sid, "batch_id": batch_id, "checkpoint": checkpoint_location}
        base_row = {"run_id": res.run_id, "model_version": version, "mode": mode, "started_at": utcnow(),
                    "model_digest": digest}
        with RunRecord(spark, name, base_row, timeout) as record:
            ids = build(spark, source, ckpt, cfg, existing=_committed_rows(spark, name, version) if previous else None)
            try:
                row = _publish(spark, cfg, res, ids, ids.rows_in, name, previous, levels,
                               int(ckpt.model["codebook_size"]), step, timeout)
            finally:
                ids.unpersist()
            res.timings["total"] = round(time.perf_counter() - t0, 3)
            res.details.update({"stream": stream, "rejects_by_reason": res.rejects_by_reason, "buckets": res.buckets,
                                "timings": res.timings, "versions": library_versions(), "config": to_dict(cfg),
                                "model": ckpt.model, "checkpoint_sha256": ckpt.config["weights_sha256"],
                                "session": "connect" if is_connect(spark) else "classic"})
            step(f"committing micro-batch {batch_id}")
            lock.check()
            record.commit({**row, "details": res.details})
        step(f"committed micro-batch {batch_id}")
        _clean(spark, name, version, res, keep=row["segments"])
        log.info("micro-batch %d: %d rows in, %d new IDs, %d rejected", batch_id, res.rows_in, res.rows_new,
                 res.rows_rejected)
    finally:
        step.close()
    return res
