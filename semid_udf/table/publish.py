"""``semid-assign`` as a library call: read the input, encode every row, publish the IDs as
one commit (:mod:`semid_udf.table.commit`).

The stages, in order (each logged, timed and named on its Spark jobs)::

    check the model -> read the input -> start the encode -> lock the version -> check the
    binding, create the tables -> the encoded rows (+ duplicates, append rules, suffixes)
    -> write and reconcile -> commit -> clean up

The encode writes nothing, so it may start before the lock: on a classic session it runs in
the background while the metastore work (seconds with an embedded Derby) goes on
(:func:`start_encode` is that seam); a refusal cancels it. A kill or failure before the
commit leaves the previous commit in place.
"""
from __future__ import annotations

import contextlib
import logging
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from pyspark.sql import DataFrame, SparkSession

from semid_udf.config import JobConfig, to_dict
from semid_udf.errors import DiskFullError, InputError, SemidError, UnsafeSettingError
from semid_udf.model.checkpoint import Checkpoint
from semid_udf.model.encode import effective_plugin
from semid_udf.paths import check_table_location, local_path, warehouse_path
from semid_udf.spark import ids as ix
from semid_udf.spark import schema as sc
from semid_udf.spark.api import AQE_OFF, Encoded, SemanticIds, as_checkpoint, encode_rows, ids_of, probe, session_conf
from semid_udf.spark.files import is_connect
from semid_udf.spark.inputs import Source, read_source, shuffle_partitions
from semid_udf.spark.progress import Progress
from semid_udf.spark.session import check_safe_settings
from semid_udf.table import catalog as ct
from semid_udf.table import staging
from semid_udf.table.commit import (Publication, Written, lock_version, model_digest, new_run_id, open_publication,
                                    release_lock)
from semid_udf.table.concurrency import Background, metastore_pool
from semid_udf.table.locks import VersionLock

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a run did: its counts, statistics, timings and the details its commit records."""

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

    def record(self, written: Written, ids: SemanticIds) -> None:
        """Take the counts and statistics of what the run wrote."""
        self.rows_in, self.rows_out, self.rows_new = written.rows_in, written.rows_out, written.rows_new
        self.rows_rejected, self.rejects_by_reason = written.rows_rejected, dict(written.rejects_by_reason)
        self.buckets = dict(written.buckets)
        self.timings.update(written.timings)
        self.details.update(ids.append)
        self.details["collisions"] = ids.collisions

    def commit_details(self, spark: SparkSession, cfg: JobConfig, ckpt: Checkpoint) -> dict[str, Any]:
        """The ``details`` of the run's commit row."""
        self.details.update({
            "rejects_by_reason": self.rejects_by_reason, "buckets": self.buckets, "timings": self.timings,
            "versions": library_versions(), "config": to_dict(cfg), "model": ckpt.model,
            "checkpoint_sha256": ckpt.config["weights_sha256"],
            "session": "connect" if is_connect(spark) else "classic"})
        return self.details


def library_versions() -> dict[str, str]:
    import numpy
    import pyarrow
    import pyspark
    import torch

    from semid_udf import __version__

    return {"semid": __version__, "python": platform.python_version(), "pyspark": pyspark.__version__,
            "torch": torch.__version__, "pyarrow": pyarrow.__version__, "numpy": numpy.__version__}


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

    def close(self) -> None:
        self("done")
        if not is_connect(self.spark):
            self.spark.sparkContext.setJobDescription(None)  # type: ignore[arg-type]  # None clears it; pyspark's stub says str
        self.spark.removeTag(self.tag)


class Encoding:
    """The run's encode, started by :func:`start_encode`: :meth:`result` gives the run's IDs
    (the encoded rows, waited for or encoded now; then, in the calling thread, the append rules
    against the publication's rows, collisions and suffixes); :meth:`close` cancels what still
    runs and frees the cached rows."""

    def __init__(self, spark: SparkSession, cfg: JobConfig, ckpt: Checkpoint, source: Source, res: RunResult):
        self.spark, self.cfg, self.ckpt, self.source, self.res = spark, cfg, ckpt, source, res
        self.bg: Background | None = None
        self.restore = contextlib.ExitStack()  # the session setting to put back once no thread of ours plans with it
        self.encoded: Encoded | None = None
        self.ids: SemanticIds | None = None

    def _encode(self, rows: DataFrame | None = None, group: str | None = None) -> Encoded:
        t = time.perf_counter()
        with Progress(self.spark, self.source.rows, "encoding", group=group, interval_s=self.cfg.encode.progress_s):
            out = encode_rows(self.spark, self.source, self.ckpt, self.cfg, rows)
        self.res.timings["encode"] = round(time.perf_counter() - t, 3)
        return out

    def _start(self) -> None:
        """Classic sessions, unsharded: in the background. The session setting the encode needs
        is set here, before its thread starts, and put back after it is joined."""
        self.restore.enter_context(session_conf(self.spark, *AQE_OFF))
        self.bg = Background(self.spark, f"semid {self.res.run_id}: encoding", lambda group: self._encode(group=group))
        self.bg.wait_started()

    def _joined(self) -> None:
        self.restore.close()  # once: a closed ExitStack has nothing left to undo

    def result(self, pub: Publication, step: Any) -> SemanticIds:
        try:
            if self.bg is not None:
                self.encoded = self.bg.wait()
            else:
                with session_conf(self.spark, *AQE_OFF):
                    self.encoded = self._sharded(pub, step) if self.cfg.output.shards > 1 else self._encode()
        finally:
            self._joined()
        self.ids = ids_of(self.spark, self.encoded, self.ckpt, self.cfg, self.source.id_type, existing=pub.existing(),
                          files=self.cfg.output.files_per_version or None)
        return self.ids

    def _sharded(self, pub: Publication, step: Any) -> Encoded:
        """Shard by shard, each staged and recorded as it finishes (:mod:`.staging`), so that a
        rerun computes only the shards a killed run did not finish."""
        cfg, src, levels = self.cfg, self.source, int(self.ckpt.model["levels"])
        root = ct.location_of(self.spark, pub.table.q("_data")) + "/_staging"
        settings = {"encode": to_dict(cfg.encode), "plugin": to_dict(effective_plugin(self.ckpt, cfg.plugin)),
                    "input": to_dict(cfg.input), "collisions": [cfg.output.collisions, cfg.output.candidates]}
        stamps = (list(src.plan.files) if src.plan else list(src.fetched[0].files) if src.fetched
                  else sorted(cast(DataFrame, src.frame).inputFiles()))  # neither: a frame
        fp = staging.fingerprint(stamps, src.description, self.ckpt.model_version, settings, cfg.output.shards)
        schema = sc.coded(levels, src.id_type, candidates=cfg.output.collisions == "nearest_free").spark()
        coded, self.res.details["resume"] = staging.encode_sharded(
            self.spark, pub.table, pub.base_row, lambda k, n: ix.coded(self.spark, src, self.ckpt, cfg, levels, (k, n)),
            cfg.output.shards, root, fp, schema, step)
        step("classifying duplicates and counting")
        return self._encode(rows=coded)

    def close(self) -> None:
        try:
            if self.bg is not None:
                self.bg.cancel()
        finally:
            self._joined()
        if self.ids is not None:
            self.ids.unpersist()
        elif self.encoded is not None:
            for d in self.encoded.cached:
                d.unpersist(blocking=True)


def start_encode(spark: SparkSession, cfg: JobConfig, ckpt: Checkpoint, source: Source, res: RunResult) -> Encoding:
    """Start the encode where that pays: in the background on a classic session (the
    metastore's first calls take seconds, which it overlaps: bench/RESULTS.md); in line on
    Spark Connect (the server's metastore is already warm) and when sharded (each shard is
    recorded in the manifest, which needs the tables)."""
    enc = Encoding(spark, cfg, ckpt, source, res)
    if not is_connect(spark) and cfg.output.shards <= 1:
        enc._start()
    return enc


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
    t_start = time.perf_counter()
    check_safe_settings(spark)  # also when called as a library, not only through build_session
    check_paths(input_path, checkpoint if isinstance(checkpoint, (str, os.PathLike)) else None, warehouse, table,
                location)
    step = Stages(spark, res)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.output.arrow_batch))
    enc: Encoding | None = None
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

        step("starting the encode")
        enc = start_encode(spark, cfg, ckpt, source, res)
        with metastore_pool(spark):
            step("locking the model version for this run")
            lock = lock_version(spark, name, version=ckpt.model_version, holder=res.run_id, warehouse=warehouse,
                                wait_s=cfg.output.lock_wait_s, timeout_s=timeout)
            step("checking that the version is bound to this model")
            pub = open_publication(spark, name, lock=lock, version=ckpt.model_version, digest=digest, mode=mode,
                                   run_id=res.run_id, id_type=source.id_type, levels=int(ckpt.model["levels"]),
                                   codebook_size=int(ckpt.model["codebook_size"]), location=location, timeout_s=timeout)
        with pub:
            step("encoding: validating and assigning codes to every row")
            ids = enc.result(pub, step)
            written = pub.write(ids, rows_expected=n_input, limits=cfg.output, embedding_col=cfg.input.embedding_col,
                                step=step)
            res.record(written, ids)
            res.timings["total"] = round(time.perf_counter() - t_start, 3)
            step("committing: the manifest row that makes the run visible")
            pub.commit(written, res.commit_details(spark, cfg, ckpt))
        step("removing what no commit uses any more")
        res.details.update(pub.clean(written, staging=res.details.get("resume", {}).get("staging")))
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
