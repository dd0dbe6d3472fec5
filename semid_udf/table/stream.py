"""New items as they arrive: Structured Streaming over a file or table source, each
micro-batch published as an append run (``semid-assign --stream``).

Per micro-batch (``foreachBatch``): the items of the batch that the model version does not
have yet get IDs with the append rules (published IDs never move, suffixes continue per
code tuple; the very first batch of a version that has no commit yet starts it), written
and committed exactly as a ``semid-assign`` run is (see :mod:`semid_udf.table.publish`). The
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
import os
import re
import time
from dataclasses import dataclass
from typing import Any, cast

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from semid_udf.table import catalog as ct
from semid_udf.spark.api import as_checkpoint, build, probe
from semid_udf.config import JobConfig
from semid_udf.errors import ConfigError, InputError
from semid_udf.spark.inputs import normalise_frame, read_source
from semid_udf.table.locks import VersionLock
from semid_udf.table.commit import (StreamBatch, bind, lock_version, model_digest, new_run_id, open_publication,
                                    release_lock)
from semid_udf.table.concurrency import bounded
from semid_udf.table.publish import RunResult, Stages, check_paths

log = logging.getLogger(__name__)


def stream_id(checkpoint_location: str, query_id: str) -> str:
    """The stream's identity in the manifest: its checkpoint location and Spark's id of the
    query that checkpoint belongs to. Spark keeps that id across restarts and makes a new one
    when the checkpoint folder is new (or was deleted), and then numbers micro-batches from 0
    again: with the location alone, a reset stream found its new batches "already committed"
    and skipped them."""
    return hashlib.sha256(f"{checkpoint_location.rstrip('/')}|{query_id}".encode()).hexdigest()[:16]


def query_id(spark: SparkSession, checkpoint_location: str) -> str:
    """Spark's id of the query whose checkpoint is ``checkpoint_location`` (its ``metadata``
    file, written before the first micro-batch), read through Spark: any file system the
    stream's checkpoint is on."""
    row = spark.read.text(f"{checkpoint_location.rstrip('/')}/metadata").first()
    try:
        return str(json.loads(cast(Any, row)[0])["id"])  # None (an empty file): the TypeError below
    except (TypeError, ValueError, KeyError) as e:
        raise ConfigError(f"--stream-checkpoint {checkpoint_location}: expected Spark's metadata file with the "
                          f"query's id, got {row[0] if row else 'an empty file'!r} ({e})") from None


def last_batch(spark: SparkSession, name: ct.TableName, version: str, sid: str) -> int | None:
    """The highest micro-batch id of stream ``sid`` committed to the version, or None. Read from
    the manifest's ``stream_id`` and ``batch_id`` columns; rows written before those columns
    existed carry them in ``details`` (``$.stream.id``, ``$.stream.batch_id``)."""
    stream = F.coalesce(F.col("stream_id"), F.get_json_object("details", "$.stream.id"))
    batch = F.coalesce(F.col("batch_id"), F.get_json_object("details", "$.stream.batch_id").cast("long"))
    row = (ct.manifest(spark, name, version).where(F.col("status") == "complete").where(stream == sid)
           .agg(F.max(batch)).first())
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
    check_paths(input_path, checkpoint if isinstance(checkpoint, (str, os.PathLike)) else None, warehouse, table,
                location)
    timeout = float(cfg.output.metastore_timeout_s)
    probe(ckpt, cfg)
    digest = model_digest(ckpt, cfg)
    if input_path is not None:
        schema = _input_schema(spark, cfg, input_path)
        reader = spark.readStream.schema(schema)  # a file stream needs its schema up front
        if cfg.input.files_per_trigger:
            reader = reader.option("maxFilesPerTrigger", cfg.input.files_per_trigger)
        source = reader.parquet(input_path)
    elif input_table is not None:
        source = spark.readStream.table(input_table)
    else:
        raise ConfigError("--stream: expected --input PATH or --input-table NAME")
    _, id_type = normalise_frame(source, cfg.input)  # checks the columns now, before anything is written
    lock_id = f"stream-{stream_id(checkpoint_location, '')}-{new_run_id()}"
    ct.check_catalog(spark, name)
    lock = lock_version(spark, name, version=version, holder=lock_id, warehouse=warehouse,
                        wait_s=cfg.output.lock_wait_s, timeout_s=timeout)
    results: list[RunResult] = []
    failed = False
    try:
        bind(spark, name, version=version, digest=digest, mode="full", timeout_s=timeout)  # before any batch
        bounded("creating the tables", timeout, lambda: ct.ensure_tables(spark, name, levels, id_type, location))

        run = StreamRun(spark, cfg, ckpt, name, digest, checkpoint_location, lock, timeout, location)

        def batch(df: DataFrame, batch_id: int) -> None:
            res = run.batch(df, batch_id)
            if res is not None:
                results.append(res)

        writer = source.writeStream.foreachBatch(batch).option("checkpointLocation", checkpoint_location)
        writer = writer.trigger(availableNow=True) if trigger == "available-now" else writer.trigger(
            processingTime=trigger)
        for restart in range(MAX_QUARANTINE_RESTARTS + 1):
            query = writer.queryName(f"semid-{name.table}-{version}"[:60]).start()
            log.info("stream %s (checkpoint %s) -> %s version %s, trigger %s", query.id, checkpoint_location, name,
                     version, trigger)
            try:
                query.awaitTermination()
                break
            except Exception as e:  # a micro-batch that moved an unreadable file away runs again without it
                moved = QUARANTINED.search(str(e))
                if moved is None or restart == MAX_QUARANTINE_RESTARTS:
                    raise _stream_error(e) from e
                log.warning("restarting the stream: %s runs again without %s", moved.group("batch"),
                            moved.group("path"))
    except BaseException:
        failed = True
        raise
    finally:
        release_lock(lock, timeout, failed)
    return results


@dataclass(frozen=True)
class StreamRun:
    """What every micro-batch of one stream publishes with: the stream's session, settings,
    model and its digest, table, checkpoint location, the writer lock it holds, and bounds."""

    spark: SparkSession
    cfg: JobConfig
    ckpt: Any
    name: ct.TableName
    digest: str
    checkpoint_location: str
    lock: VersionLock
    timeout: float
    location: str | None

    def batch(self, df: DataFrame, batch_id: int) -> RunResult | None:
        """Micro-batch ``batch_id``, unless the stream already committed it (a replay)."""
        qid = query_id(df.sparkSession, self.checkpoint_location)
        sid = stream_id(self.checkpoint_location, qid)
        done = last_batch(self.spark, self.name, self.ckpt.model_version, sid)
        if done is not None and batch_id <= done:
            log.info("micro-batch %d of stream %s is already committed (up to %d): nothing to do", batch_id, sid, done)
            return None
        return _with_unreadable_files(self.cfg, f"micro-batch {batch_id}",
                                      lambda: self._publish(df, StreamBatch(sid, batch_id), qid))

    def _publish(self, df: DataFrame, at: StreamBatch, qid: str) -> RunResult | None:
        """One micro-batch, published with the commit's calls (:mod:`semid_udf.table.commit`) as
        an append run (or the version's first run)."""
        spark, cfg, ckpt, batch_id = self.spark, self.cfg, self.ckpt, at.batch_id
        if df.isEmpty():  # the first read of the micro-batch's files
            log.info("micro-batch %d of stream %s is empty: nothing to do", batch_id, at.stream_id)
            return None
        source = read_source(spark, cfg.input, frame=df)
        pub = open_publication(spark, self.name, lock=self.lock, version=ckpt.model_version, digest=self.digest,
                               mode=None, run_id=new_run_id(), id_type=source.id_type,
                               levels=int(ckpt.model["levels"]), codebook_size=int(ckpt.model["codebook_size"]),
                               location=self.location, timeout_s=self.timeout, stream=at, create_tables=False)
        res = RunResult(run_id=pub.run_id, model_version=pub.version, table=str(self.name), mode=pub.mode)
        step = Stages(spark, res)
        t0 = time.perf_counter()
        try:
            step(f"micro-batch {batch_id}: encoding")
            with pub:
                ids = build(spark, source, ckpt, cfg, existing=pub.existing())
                try:
                    written = pub.write(ids, rows_expected=ids.rows_in, limits=cfg.output,
                                        embedding_col=cfg.input.embedding_col, step=step)
                    res.record(written, ids)
                finally:
                    ids.unpersist()
                res.timings["total"] = round(time.perf_counter() - t0, 3)
                res.details["stream"] = {"checkpoint": self.checkpoint_location, "query_id": qid}
                step(f"committing micro-batch {batch_id}")
                pub.commit(written, res.commit_details(spark, cfg, ckpt))
            step(f"committed micro-batch {batch_id}")
            res.details.update(pub.clean(written))
            log.info("micro-batch %d: %d rows in, %d new IDs, %d rejected", batch_id, res.rows_in, res.rows_new,
                     res.rows_rejected)
        finally:
            step.close()
        return res


# A file of the stream's folder that cannot be read: Spark names it in its error.
_FAILED_READ = re.compile(r"FAILED_READ_FILE[\w.]*\]?.*?(?:reading file|file) (?P<path>\S+?)\.?(?:\s|$)", re.S)
QUARANTINED = re.compile(r"semid: (?P<batch>.+?) moved the unreadable file (?P<path>\S+) to ")
MAX_QUARANTINE_RESTARTS = 100


def unreadable_file(e: BaseException) -> str | None:
    """The path of the file whose read failed, when that is why ``e`` was raised."""
    params = getattr(e, "getMessageParameters", None)
    condition = getattr(e, "getCondition", None)
    try:
        if callable(params) and callable(condition) and str(condition() or "").startswith("FAILED_READ_FILE"):
            path = (params() or {}).get("path")
            if path:
                return str(path)
    except Exception:  # not a Spark error with parameters: read its message instead
        log.debug("no message parameters", exc_info=True)
    found = _FAILED_READ.search(str(e))
    return found.group("path") if found else None


def _with_unreadable_files(cfg: JobConfig, what: str, fn: Any) -> Any:
    """``fn()``; a file that cannot be read becomes one line naming it and what to do, or, with
    ``input.quarantine``, is moved there (the stream then runs the micro-batch again without it)."""
    try:
        return fn()
    except Exception as e:
        path = unreadable_file(e)
        if path is None:
            raise
        cause = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        if cfg.input.quarantine:
            dest = _quarantine(path, cfg.input.quarantine)
            raise InputError(f"semid: {what} moved the unreadable file {path} to {dest} (input.quarantine); nothing "
                             f"was published for it ({cause})") from None
        raise InputError(
            f"{what}: cannot read the input file {path} ({cause}); nothing was published for this micro-batch. "
            "Replace the file with a readable one or delete it and start the stream again, or start it with "
            "--set input.quarantine=DIR to move unreadable files there and go on without them") from None


def _input_schema(spark: SparkSession, cfg: JobConfig, input_path: str) -> Any:
    """The schema of the folder's Parquet files (a file stream needs it up front)."""
    for _ in range(MAX_QUARANTINE_RESTARTS):
        try:
            return _with_unreadable_files(cfg, "reading the input's schema", lambda: spark.read.parquet(input_path).schema)
        except InputError as e:
            if QUARANTINED.search(str(e)) is None:
                raise
    raise InputError(f"input {input_path}: more than {MAX_QUARANTINE_RESTARTS} unreadable files moved to quarantine")


def _quarantine(path: str, folder: str) -> str:
    """Move ``path`` into ``folder`` (a local path or a URI pyarrow opens); returns where it went."""
    import pyarrow.fs as pafs

    from semid_udf.paths import local_path, uri_path

    def open_fs(loc: str) -> tuple[Any, str]:
        local = local_path(loc)
        return (pafs.LocalFileSystem(), local) if local is not None else pafs.FileSystem.from_uri(loc)

    src_fs, src = (pafs.LocalFileSystem(), uri_path(path)) if local_path(path) else pafs.FileSystem.from_uri(path)
    dst_fs, dst_dir = open_fs(folder)
    dst_fs.create_dir(dst_dir, recursive=True)
    dest = f"{dst_dir.rstrip('/')}/{time.strftime('%Y%m%dT%H%M%S')}-{src.rsplit('/', 1)[-1]}"
    if type(src_fs) is type(dst_fs):
        src_fs.move(src, dest)
    else:
        pafs.copy_files(src, dest, source_filesystem=src_fs, destination_filesystem=dst_fs)
        src_fs.delete_file(src)
    log.warning("moved the unreadable input file %s to %s (input.quarantine)", path, dest)
    return dest


def _stream_error(e: BaseException) -> BaseException:
    """The semid error a micro-batch raised, unwrapped from Spark's foreachBatch error (which
    carries it as the last line of a Python traceback); ``e`` itself otherwise."""
    from semid_udf import errors

    found = _SEMID_ERROR.findall(str(e))
    if found:
        cls, msg = found[-1]
        return getattr(errors, cls)(msg.strip())
    return e


_SEMID_ERROR = re.compile(r"semid_udf\.errors\.(\w+Error): (.+)")
