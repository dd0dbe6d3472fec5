"""``semid-assign`` as a library call: :func:`semid_udf.semantic_ids`, then a publish that
is all-or-nothing.

The stages, in order (each logged, timed and named on its Spark jobs):

    check the model -> read the input -> lock the version -> check the binding -> tables
    -> encode (+ classify duplicates) -> rejects -> suffix + write -> reconcile -> commit
    -> clean up

How a run publishes (Delta Lake's commit protocol, on plain Parquet and a metastore):

1. The run writes its rows to a partition of its own of ``<name>_data`` (folder
   ``model_version=V/run_id=R``) and registers it. Nobody reads that table directly.
2. It reconciles the counts against what it wrote.
3. It commits: one ``complete`` row appended to ``<name>_manifest``, naming the runs
   (``segments``) and data files (``files``) that make up version V from now on. That row is
   one small file that appears whole or not at all. The view ``<name>`` (and
   ``<name>_latest``) and the DuckDB and pandas recipes of docs/usage.md read exactly what the last
   commit of each version names, so until the row exists every reader sees the previous
   commit, and after it, the new one.
4. It removes the partitions and files no commit uses any more, and what killed runs of
   the version left behind.

A kill or failure at any point before step 3 leaves the previous commit in place (and a
``running`` or ``failed`` row); after it, the new commit. One writer per model version at a
time (:mod:`semid_udf.locks`), and a version stays bound to the model (config, weights,
micro-batch) of its first commit.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import platform
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, cast
from urllib.parse import unquote

from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from . import catalog as ct
from . import ids as ix
from . import schema as sc
from . import staging
from .api import Encoded, SemanticIds, as_checkpoint, encode_rows, ids_of, probe
from .checkpoint import Checkpoint
from .config import JobConfig, to_dict
from .encode import effective_plugin
from .errors import (ConfigError, DiskFullError, InputError, MetastoreTimeoutError, ReconcileError, SemidError,
                     UnsafeSettingError)
from .files import Files, is_connect
from .paths import check_table_location, local_path, uri_path, warehouse_path
from .inputs import Source, read_source, shuffle_partitions
from .locks import VersionLock
from .progress import Progress
from .session import check_safe_settings

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    run_id: str
    model_version: str
    table: str
    mode: str
    rows_in: int = 0
    rows_out: int = 0
    rows_rejected: int = 0
    rows_new: int = 0
    rejects_by_reason: dict[str, int] = field(default_factory=dict)
    buckets: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


def library_versions() -> dict[str, str]:
    import numpy
    import pyarrow
    import pyspark
    import torch

    from . import __version__

    return {"semid": __version__, "python": platform.python_version(), "pyspark": pyspark.__version__,
            "torch": torch.__version__, "pyarrow": pyarrow.__version__, "numpy": numpy.__version__}


def new_run_id() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def model_digest(ckpt: Checkpoint, cfg: JobConfig) -> str:
    """What a model version is bound to: the model config (semid's, or the plugin recorded in
    the checkpoint or given in the config), the weights and the micro-batch (a different
    micro-batch may round a near-tie the other way)."""
    eff = effective_plugin(ckpt, cfg.plugin)
    plugin = to_dict(eff) if eff.factory else None
    doc = {"model": ckpt.model, "plugin": plugin, "weights_sha256": ckpt.config["weights_sha256"],
           "micro_batch": cfg.encode.micro_batch}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def bounded(what: str, seconds: float, fn: Callable[[], Any]) -> Any:
    """``fn()``, or a clear error when it has not returned after ``seconds`` (a metastore that
    cannot write, a full disk). The call itself cannot be interrupted: it is left behind in
    its thread, and the job exits."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # handed to the caller below
            box["error"] = e

    t = threading.Thread(target=target, name=f"semid: {what}", daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        raise MetastoreTimeoutError(f"{what}: no answer after {seconds:.0f} s (output.metastore_timeout_s); is the "
                               "metastore reachable, and its disk (or the warehouse's) not full?")
    if "error" in box:
        raise box["error"]
    return box.get("value")


class Stages:
    """Names the stage in the log, times it, and labels its Spark jobs (a job description on a
    classic session; Spark Connect has none, its jobs carry the run's tag)."""

    def __init__(self, spark: SparkSession, res: RunResult):
        self.spark, self.res = spark, res
        self.label, self.t = "", time.perf_counter()
        self.tag = f"semid-{res.run_id}"
        spark.addTag(self.tag)

    def __call__(self, label: str) -> None:
        now = time.perf_counter()
        if self.label:
            self.res.timings[f"step: {self.label}"] = round(now - self.t, 3)
        self.label, self.t = label, now
        if not is_connect(self.spark):
            self.spark.sparkContext.setJobDescription(f"semid {self.res.run_id}: {label}")
        log.info("%s", label)
        failpoint = os.environ.get("SEMID_FAILPOINT")
        if failpoint and label.startswith(failpoint):  # fault injection for tests: hold the run here to be killed
            log.warning("failpoint: paused at %s", label)
            time.sleep(3600)

    def close(self) -> None:
        self("done")
        if not is_connect(self.spark):
            self.spark.sparkContext.setJobDescription(None)  # type: ignore[arg-type]  # None clears it; pyspark's stub says str
        self.spark.removeTag(self.tag)


class RunRecord:
    """The run's rows in the manifest: ``running`` on entry, ``failed`` (with the error) when
    the block raises before :meth:`commit`; :meth:`commit` writes the ``complete`` row."""

    def __init__(self, spark: SparkSession, name: ct.TableName, base_row: dict[str, Any], timeout_s: float):
        self.spark, self.name, self.base_row, self.timeout_s = spark, name, base_row, timeout_s
        self.committed = False

    def write(self, row: dict[str, Any]) -> None:
        def insert() -> None:
            with metastore_pool(self.spark):  # the thread running it is the one whose pool counts
                ct.write_manifest(self.spark, self.name, {**self.base_row, **row})

        bounded(f"writing the manifest row ({row['status']})", self.timeout_s, insert)

    def __enter__(self) -> "RunRecord":
        self.write({"status": "running"})
        return self

    def commit(self, row: dict[str, Any]) -> None:
        self.write({**row, "status": "complete", "finished_at": utcnow()})
        self.committed = True

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None or self.committed:
            return
        if isinstance(exc, MetastoreTimeoutError):  # the metastore stopped answering: do not wait on it again
            log.error("not recording the failed run in %s: %s", self.name.name("_manifest"), exc)
            return
        try:
            self.write({"status": "failed", "finished_at": utcnow(), "error": f"{type(exc).__name__}: {exc}"[:2000]})
        except Exception as m:  # the run's own error is the one raised; say that recording it failed too
            log.error("could not record the failed run in %s: %s", self.name.name("_manifest"), m)


class Background:
    """One Spark action in another thread (classic sessions: in its own job group, so its
    progress can be followed and it can be cancelled); ``wait`` re-raises its error.
    ``fn`` receives the job group, which exists before the thread starts."""

    def __init__(self, spark: SparkSession, description: str, fn: Callable[[str], Any]):
        self.spark, self.sc = spark, spark.sparkContext  # classic sessions only (see Encode)
        self.group, self.description = f"semid-{uuid.uuid4().hex[:12]}", description
        self.error: BaseException | None = None
        self.value: Any = None
        self.done = False
        from pyspark import InheritableThread

        def target() -> None:
            try:
                self.sc.setJobGroup(self.group, description, interruptOnCancel=True)
                self.value = fn(self.group)
            except BaseException as e:  # handed to the main thread by wait()
                self.error = e
            finally:
                self.done = True

        self.thread = InheritableThread(target=target, daemon=True)
        self.thread.start()

    def wait_started(self, poll_s: float = 0.05) -> None:
        """Return once the action has a Spark job (or has ended, for instance with an error)."""
        tracker = self.sc.statusTracker()
        t = time.perf_counter()
        while not self.done and not tracker.getJobIdsForGroup(self.group):
            time.sleep(poll_s)
        log.info("%s: first job submitted after %.1f s", self.description, time.perf_counter() - t)

    def wait(self) -> Any:
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.value

    def cancel(self) -> None:
        """Stop the action if it still runs (the main thread failed or finished with it)."""
        if not self.done:
            self.sc.cancelJobGroup(self.group)
        self.thread.join()


class Encode:
    """The encode step (:func:`semid_udf.api.encode_rows`): every input row becomes codes or a
    reject reason, once, duplicates classified, the rows cached for the writes.

    On a classic session it can start before the metastore work and run beside it (the
    metastore's first calls took seconds with an embedded Derby: bench/RESULTS.md); it reads
    no table, so what follows it (the append rules need the published rows) waits for the
    lock. On Spark Connect the server's metastore is already warm, and it runs in line."""

    def __init__(self, spark: SparkSession, cfg: JobConfig, ckpt: Checkpoint, source: Source, res: RunResult):
        self.spark, self.cfg, self.ckpt, self.source, self.res = spark, cfg, ckpt, source, res
        self.levels = int(ckpt.model["levels"])
        self.bg: Background | None = None
        self.encoded: Encoded | None = None
        self.result: SemanticIds | None = None

    def _run(self, rows: DataFrame | None = None, group: str | None = None) -> Encoded:
        t = time.perf_counter()
        with Progress(self.spark, self.source.rows, "encoding", group=group, interval_s=self.cfg.encode.progress_s):
            out = encode_rows(self.spark, self.source, self.ckpt, self.cfg, rows)
        self.res.timings["encode"] = round(time.perf_counter() - t, 3)
        return out

    def start(self) -> None:
        """Start in the background where that pays (see the class doc)."""
        if is_connect(self.spark) or self.cfg.output.shards > 1:
            return
        self.bg = Background(self.spark, f"semid {self.res.run_id}: encoding", lambda group: self._run(group=group))
        self.bg.wait_started()

    def wait(self, name: ct.TableName, base_row: dict[str, Any], step: Callable[[str], None],
             existing: DataFrame | None) -> SemanticIds:
        """The run's IDs: the encoded rows (waited for, or encoded now), then, in this thread,
        the append rules against ``existing``, collisions and suffixes."""
        if self.bg is not None:
            self.encoded = self.bg.wait()
        elif self.cfg.output.shards > 1:
            self.encoded = self._sharded(name, base_row, step)
        else:
            self.encoded = self._run()
        self.result = ids_of(self.spark, self.encoded, self.ckpt, self.cfg, self.source.id_type, existing=existing,
                             files=self.cfg.output.files_per_version or None)
        return self.result

    def _sharded(self, name: ct.TableName, base_row: dict[str, Any], step: Callable[[str], None]) -> Encoded:
        cfg, src = self.cfg, self.source
        root = ct.location_of(self.spark, name.q("_data")) + "/_staging"
        settings = {"encode": to_dict(cfg.encode), "plugin": to_dict(effective_plugin(self.ckpt, cfg.plugin)),
                    "input": to_dict(cfg.input), "collisions": [cfg.output.collisions, cfg.output.candidates]}
        stamps = list(src.plan.files) if src.plan else sorted(cast(DataFrame, src.frame).inputFiles())  # no plan: a frame
        fp = staging.fingerprint(stamps, src.description, self.ckpt.model_version, settings, cfg.output.shards)
        schema = sc.coded(self.levels, src.id_type, candidates=cfg.output.collisions == "nearest_free").spark()
        coded, self.res.details["resume"] = staging.encode_sharded(
            self.spark, name, base_row, lambda k, n: ix.coded(self.spark, src, self.ckpt, cfg, self.levels, (k, n)),
            cfg.output.shards, root, fp, schema, step)
        step("classifying duplicates and counting")
        return self._run(rows=coded)

    def close(self) -> None:
        if self.bg is not None:
            self.bg.cancel()
        if self.result is not None:
            self.result.unpersist()
        elif self.encoded is not None:
            for d in self.encoded.cached:
                d.unpersist()


def check_paths(input_path: str | None, checkpoint: str | os.PathLike[str] | None, warehouse: str | None, table: str,
                location: str | None = None) -> None:
    """Refuse, before any work, a run whose output would be its input, contain it, or lie
    inside the checkpoint, and table folders whose names Spark and Hive disagree on."""
    name = ct.TableName.parse(table)
    check_table_location("--location", location)
    if warehouse:
        warehouse_path(warehouse)

    def local(p: str | os.PathLike[str] | None) -> Path | None:
        found = local_path(p)
        return Path(found) if found is not None else None

    folders: list[Path] = []  # where the table's folders go: <name>_data, _rejects, _manifest
    if local(location) is not None:
        folders.append(cast(Path, local(location)))
    elif warehouse:  # Hive keeps `default` at the warehouse's root (see catalog.ensure_database)
        root = Path(warehouse_path(warehouse))
        folders.append(root if name.schema == "default" else root / f"{name.schema}.db")
    outs = [f / f"{name.table}{s}" for f in folders for s in ("_data", "_rejects", "_manifest")]
    ck, inp = local(checkpoint), local(input_path)
    for out in outs:
        for what, p in (("input", inp), ("checkpoint", ck)):
            if p is None:
                continue
            if out == p or p.is_relative_to(out) or out.is_relative_to(p):
                raise UnsafeSettingError(
                    f"output location {out}: expected apart from the {what} {p}, got one inside the other; refusing "
                    "to write")


def run_assign(spark: SparkSession, cfg: JobConfig, checkpoint: Any, *, table: str, input_path: str | None = None,
               input_table: str | None = None, warehouse: str | None = None, mode: str | None = None,
               run_id: str | None = None, location: str | None = None) -> RunResult:
    """Give every input row a semantic ID (or a reject reason) and publish the version."""
    ckpt = as_checkpoint(checkpoint)
    name = ct.TableName.parse(table)
    mode = mode or cfg.output.mode
    location = location or cfg.output.location or None
    timeout = float(cfg.output.metastore_timeout_s)
    res = RunResult(run_id=run_id or new_run_id(), model_version=ckpt.model_version, table=str(name), mode=mode)
    version, levels = ckpt.model_version, int(ckpt.model["levels"])
    t_start = time.perf_counter()
    check_safe_settings(spark)  # also when called as a library, not only through build_session
    check_paths(input_path, checkpoint if isinstance(checkpoint, (str, os.PathLike)) else None, warehouse, table,
                location)
    step = Stages(spark, res)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.output.arrow_batch))
    enc: Encode | None = None
    lock: VersionLock | None = None
    failed = False
    try:
        step("checking the model: building it and encoding one batch on the driver")
        probe(ckpt, cfg)
        digest = model_digest(ckpt, cfg)

        ct.check_catalog(spark, name)
        step("checking the input")
        source = read_source(spark, cfg.input, input_path, input_table)
        n_input = source.rows if source.rows is not None else cast(DataFrame, source.frame).count()  # no row count: a frame
        if n_input == 0:
            raise InputError("input: expected at least 1 row, got 0: refusing to publish an empty version")
        shuffle_partitions(spark, n_input)
        res.details["input"] = input_path or input_table

        # The encode writes nothing (it caches the coded rows), so it may start before the
        # lock and the binding check: the metastore's first calls take seconds, which it
        # overlaps (bench/RESULTS.md). A refusal below cancels it.
        step("starting the encode")
        enc = Encode(spark, cfg, ckpt, source, res)
        enc.start()
        with metastore_pool(spark):
            step("locking the model version for this run")
            bounded("creating the database", timeout, lambda: ct.ensure_database(spark, name, warehouse))
            lock = VersionLock(spark, name, version, res.run_id, cfg.output.lock_wait_s)
            bounded("taking the writer lock", timeout + cfg.output.lock_wait_s, lock.acquire)
            step("checking that the version is bound to this model")
            previous = _previous_commit(spark, name, version, digest, mode, timeout)
            step("creating the tables if absent")
            bounded("creating the tables", timeout,
                    lambda: ct.ensure_tables(spark, name, levels, source.id_type, location))
        base_row = {"run_id": res.run_id, "model_version": version, "mode": mode, "started_at": utcnow(),
                    "model_digest": digest}
        with RunRecord(spark, name, base_row, timeout) as record:
            step("encoding: validating and assigning codes to every row")
            ids = enc.wait(name, base_row, step, _committed_rows(spark, name, version) if mode == "append" else None)
            row = _publish(spark, cfg, res, ids, n_input, name, previous, levels, int(ckpt.model["codebook_size"]),
                           step, timeout)
            res.timings["total"] = round(time.perf_counter() - t_start, 3)
            res.details.update({
                "rejects_by_reason": res.rejects_by_reason, "buckets": res.buckets, "timings": res.timings,
                "versions": library_versions(), "config": to_dict(cfg), "model": ckpt.model,
                "checkpoint_sha256": ckpt.config["weights_sha256"], "session": "connect" if is_connect(spark)
                else "classic"})
            step("committing: the manifest row that makes the run visible")
            lock.check()
            record.commit({**row, "details": res.details})
        step("removing what no commit uses any more")
        _clean(spark, name, version, res, keep=row["segments"])
    except BaseException as e:
        failed = True
        if is_connect(spark):  # stop what the server still runs for this run
            spark.interruptTag(step.tag)
        raise _with_disk_hint(e, warehouse, location) from e
    finally:
        if enc is not None:
            enc.close()
        if lock is not None:
            release_lock(lock, timeout, failed)
        step.close()
    return res


def release_lock(lock: VersionLock, timeout: float, failing: bool) -> None:
    """Release the writer lock within ``timeout`` seconds, like every other metastore call: a
    metastore that stopped answering (a full disk) must not hold the run forever. When the run
    is already failing, its own error is the one raised and this is logged: the lock view
    stays until the next writer takes it over (its holder, this process, will have ended)."""
    try:
        bounded("releasing the writer lock", timeout, lock.release)
    except Exception as e:
        if not failing:
            raise
        log.error("could not release the writer lock %s: %s", lock.view, e)


@contextlib.contextmanager
def metastore_pool(spark: SparkSession) -> Iterator[None]:
    """On a classic session (FAIR scheduling), the small jobs of this thread's metastore work
    go to a pool of their own instead of queueing behind the encode's tasks; Spark Connect
    has no scheduler pools to choose (nothing runs beside its encode)."""
    if is_connect(spark):
        yield
        return
    ctx = spark.sparkContext  # classic sessions only (checked above)
    ctx.setLocalProperty("spark.scheduler.pool", "semid_metastore")
    try:
        yield
    finally:
        ctx.setLocalProperty("spark.scheduler.pool", None)  # type: ignore[arg-type]  # None removes it; pyspark's stub says str


LOW_DISK = 64 << 20  # below this, a failure on a local warehouse or location is reported as a full disk


def _with_disk_hint(e: BaseException, *places: str | None) -> BaseException:
    """``e``, or a DiskFullError naming the file system when a local warehouse or location
    has almost no space left (the metastore's and Spark's own messages rarely say so)."""
    if isinstance(e, SemidError) or not isinstance(e, Exception):
        return e
    for place in places:
        path = local_path(place) if place else None
        if path is None:
            continue
        probe_at = Path(path)
        while not probe_at.exists() and probe_at != probe_at.parent:
            probe_at = probe_at.parent
        free = shutil.disk_usage(probe_at).free
        if free < LOW_DISK:
            first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
            return DiskFullError(f"{place}: the file system has {free >> 20} MB free, too little to write the tables "
                                 f"and the metastore ({type(e).__name__}: {first[:300]})")
    return e


def _previous_commit(spark: SparkSession, name: ct.TableName, version: str, digest: str, mode: str,
                     timeout: float) -> dict[str, Any] | None:
    """The version's last commit (None if there is none); refuse another model, or an append
    with nothing to append to."""
    if not spark.catalog.tableExists(name.name("_manifest")):
        prev = None
    else:
        prev = bounded("reading the manifest", timeout, lambda: ct.last_commit(spark, name, version))
    if prev is not None and prev["model_digest"] != digest:
        raise ConfigError(
            f"model version {version} of {name} was published with another model (run {prev['run_id']}): expected "
            f"model digest {prev['model_digest'][:16]}..., got {digest[:16]}... (config, weights or "
            "encode.micro_batch differ); a model version names one model: give this one another version "
            "(semid-train --model-version, or let semid derive it) or publish into another table")
    if mode == "append" and prev is None:
        raise ConfigError(f"--mode append: model version {version} has no complete run in {name}; publish it with "
                          "a full run first (an append adds items to a published version)")
    return prev


def _committed_rows(spark: SparkSession, name: ct.TableName, version: str) -> DataFrame:
    return spark.table(name.name()).where(F.col("model_version") == version)


def _publish(spark: SparkSession, cfg: JobConfig, res: RunResult, ids: SemanticIds, n_input: int,
             name: ct.TableName, previous: dict[str, Any] | None, levels: int, codebook_size: int,
             step: Callable[[str], None], timeout: float) -> dict[str, Any]:
    """Rejects, bucket statistics, the run's data, and the reconciliation; returns the
    commit's manifest fields."""
    res.rows_in, res.rows_new = ids.rows_in, ids.rows_new
    res.rejects_by_reason, res.rows_rejected = ids.rejects_by_reason, ids.rows_rejected
    res.details.update(ids.append)
    res.details["collisions"] = ids.collisions
    if n_input != res.rows_in:
        raise ReconcileError(f"rows: expected {n_input} rows out of the encoder (rows in the input), got {res.rows_in}")
    version, run_id = res.model_version, res.run_id

    if res.rows_rejected:  # the run's own rejects partition (kept also when the run fails: it says why)
        step("writing rejects")
        t = time.perf_counter()
        _write_segment(spark, name.q("_rejects"), version, run_id, ids.rejects, timeout)
        res.timings["write_rejects"] = round(time.perf_counter() - t, 3)
    _check_reject_rate(ids, cfg, res)

    rows_before = int(previous["rows_out"]) if (previous and res.mode == "append") else 0
    cap = cfg.output.max_bucket_size
    from_suffixes = res.mode == "full" and not cap  # statistics from the written suffixes; else before the write
    sids = sc.sid_cols(levels)
    if not from_suffixes:
        step("bucket statistics")
        codes = ids.ids.select(*sids)
        if res.mode == "append":
            codes = _committed_rows(spark, name, version).select(*sids).unionByName(codes)
        res.buckets = ix.bucket_stats(codes, levels, codebook_size, rows_before + res.rows_new)
        if cap and res.buckets["largest_bucket"] > cap:
            raise InputError(f"bucket size: expected at most {cap} items per code tuple (output.max_bucket_size), "
                             f"got {res.buckets['largest_bucket']}")

    files: list[str] = []
    if res.rows_new:
        step(f"writing {res.rows_new} rows of {name} version {version} ({res.mode}) to the run's own partition")
        t = time.perf_counter()
        files = _write_segment(spark, name.q("_data"), version, run_id, ids.ids, timeout)
        res.timings["write_table"] = round(time.perf_counter() - t, 3)

    step("reconciling counts")
    written = (spark.table(name.name("_data")).where((F.col("model_version") == version) & (F.col("run_id") == run_id))
               if res.rows_new else None)
    stat_cols, read_stats = ix.suffix_stats(res.rows_new) if from_suffixes else ([], None)
    agg = (cast(Row, written.agg(F.count(F.lit(1)).alias("rows"), *stat_cols).first()).asDict() if written is not None
           else {"rows": 0})
    in_segment = int(agg["rows"])
    in_rejects = (spark.table(name.name("_rejects"))
                  .where((F.col("model_version") == version) & (F.col("run_id") == run_id)).count()
                  if res.rows_rejected else 0)
    res.rows_out = rows_before + in_segment
    existing = ids.append.get("rows_existing", 0)
    if (in_segment != res.rows_new or in_rejects != res.rows_rejected
            or res.rows_in != res.rows_new + existing + res.rows_rejected):
        raise ReconcileError(
            f"counts: expected rows_in {res.rows_in} == new {res.rows_new} + already published {existing} + rejected "
            f"{res.rows_rejected}, with {res.rows_new} rows written and {res.rows_rejected} rejects; got "
            f"{in_segment} rows and {in_rejects} rejects")
    if read_stats is not None and res.rows_new:
        res.buckets = read_stats(agg)
    segments = ([*previous["segments"]] if previous and res.mode == "append" else []) + ([run_id] if res.rows_new else [])
    all_files = ([*previous["files"]] if previous and res.mode == "append" else []) + files
    seq = int(previous["seq"]) + 1 if previous else 1
    return {"rows_in": res.rows_in, "rows_out": res.rows_out, "rows_rejected": res.rows_rejected,
            "rows_new": res.rows_new, "seq": seq, "segments": segments, "files": all_files}


def _write_segment(spark: SparkSession, qname: str, version: str, run_id: str, df: DataFrame, timeout: float
                   ) -> list[str]:
    """Write ``df`` as partition (version, run_id) of table ``qname`` (a folder no other run
    uses), register it, and return its data files relative to the table's location. Parquet
    writes columns by name; the partition values are in the folder. (A Delta table would
    add a ``replaceWhere`` writer beside this function.)"""
    root = bounded("locating the table", timeout, lambda: ct.location_of(spark, qname))
    path = f"{root}/{ct.partition_dir(version, run_id)}"
    df.write.mode("error").parquet(path)
    bounded("registering the run's partition", timeout, lambda: ct.add_partition(spark, qname, version, run_id, path))
    return sorted(_relative(f, root) for f in spark.read.parquet(path).inputFiles())


def _relative(uri: str, root: str) -> str:
    f, r = uri_path(uri), uri_path(root).rstrip("/")
    if not f.startswith(r + "/"):
        raise ReconcileError(f"written file {uri}: expected under the table's location {root}")
    return f[len(r) + 1:]


def _check_reject_rate(ids: SemanticIds, cfg: JobConfig, res: RunResult) -> None:
    if ids.rows_valid == 0 or res.rows_rejected > cfg.output.max_reject_rate * res.rows_in:
        top = max(res.rejects_by_reason, key=cast("Callable[[str], int]", res.rejects_by_reason.get))  # every key is in it
        ex = cast(Row, ids.rejects.where(F.col("reason") == top).select("item_id", "detail").first())  # a reject of reason top
        if res.rejects_by_reason.get("wrong_length") == res.rows_in:
            raise InputError(f"column {cfg.input.embedding_col!r}: {ex['detail'].split(': ', 1)[-1]} for every row "
                             f"(the model's input_dim), e.g. item {ex['item_id']!r}")
        raise InputError(
            f"rejects: expected at most {cfg.output.max_reject_rate:.2%} of rows (output.max_reject_rate), got "
            f"{res.rows_rejected} of {res.rows_in}; reasons {res.rejects_by_reason}; e.g. item {ex['item_id']!r}: "
            f"{ex['detail']} (see the rejects table, run_id {res.run_id})")


def _clean(spark: SparkSession, name: ct.TableName, version: str, res: RunResult, keep: list[str]) -> None:
    """Remove the version's data partitions and folders that its last commit does not name:
    the runs it replaced and what killed runs left. Runs after the commit, under the lock;
    a failure here leaves files no reader sees and is reported, not raised (the run is
    committed), and the next run of the version tries again."""
    files = Files(spark)
    removed, errors = [], []
    try:
        data = ct.location_of(spark, name.q("_data"))
        external = ct.table_type(spark, name.name("_data")) == "EXTERNAL"
        for run in ct.partitions(spark, name.q("_data"), version):
            if run not in keep:
                ct.drop_partition(spark, name.q("_data"), version, run)  # a managed table's files go with it
                removed.append(run)
                if external:
                    files.delete(f"{data}/{ct.partition_dir(version, run)}")
        folder = f"{data}/model_version={ct.escape_path_name(version)}"
        for child in files.children(folder) or []:
            if child.startswith("run_id=") and unquote(child[len("run_id="):]) not in keep:
                files.delete(f"{folder}/{child}")
                removed.append(child)
        # The rejects of the runs the commit replaced (and of failed runs before it) go too, so
        # the rejects table holds what the committed state rejected, not every attempt's.
        rejects = ct.location_of(spark, name.q("_rejects"))
        external = ct.table_type(spark, name.name("_rejects")) == "EXTERNAL"
        for run in ct.partitions(spark, name.q("_rejects"), version):
            if run not in keep:
                ct.drop_partition(spark, name.q("_rejects"), version, run)
                if external:
                    files.delete(f"{rejects}/{ct.partition_dir(version, run)}")
        if "resume" in res.details:  # the run is complete: its staged codes are no longer needed
            files.delete(res.details["resume"]["staging"])
    except Exception as e:  # reported in the log and the result: the commit stands
        errors.append(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        log.warning("clean-up after the commit failed (the run is complete; the next run retries): %s", errors[-1])
    res.details["removed"] = sorted(set(removed))
    if errors:
        res.details["cleanup_errors"] = errors
