"""The commit: how a run's IDs become a model version of a table, all or nothing (Delta Lake's
commit protocol, on plain Parquet and a metastore). The batch run (:mod:`.publish`) and the
stream (:mod:`.stream`) make the same calls::

    lock = lock_version(spark, table, version=V, holder=run_id, warehouse=..., wait_s=..., timeout_s=...)
    pub = open_publication(spark, table, lock=lock, version=V, digest=D, mode="full", run_id=R, ...)
    with pub:                                   # a `running` row; a `failed` one if the block raises
        written = pub.write(ids, rows_expected=n, limits=cfg.output, step=step)   # data first
        pub.commit(written, details)            # one `complete` row: the run is visible
    pub.clean(written)                          # what no commit names any more
    release_lock(lock, timeout_s, failing=False)

1. ``lock_version``: the version's writer lock (a view in the metastore), one writer at a time.
2. ``open_publication``: the version is bound to one model (the digest of its last commit) and
   an append needs a commit to append to; the tables exist.
3. ``write``: the run's rows and rejects go to partitions of their own
   (``model_version=V/run_id=R``) that nobody reads directly; the counts are read back and
   reconciled; returns a frozen :class:`Written`.
4. ``commit``: one ``complete`` row appended to ``<name>_manifest``, naming the runs
   (``segments``) and data files (``files``) that make up version V from now on. That row is
   one small file that appears whole or not at all; every reader (the views, the DuckDB and
   pandas recipes) follows the last commit of each version, so until the row exists readers
   see the previous commit, and after it, the new one.
5. ``clean``: the partitions and files no commit uses any more, and what killed runs left.

A kill at any point before step 4 leaves the previous commit (and a ``running`` or ``failed``
row); after it, the new one. Every metastore call is bounded by ``timeout_s``.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, cast
from urllib.parse import unquote

from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from semid_udf.config import JobConfig, OutputConfig, to_dict
from semid_udf.errors import ConfigError, InputError, MetastoreTimeoutError, ReconcileError
from semid_udf.model.checkpoint import Checkpoint
from semid_udf.model.encode import effective_plugin
from semid_udf.paths import uri_path
from semid_udf.spark import ids as ix
from semid_udf.spark import schema as sc
from semid_udf.spark.api import SemanticIds
from semid_udf.spark.files import Files
from semid_udf.table import catalog as ct
from semid_udf.table.concurrency import bounded, metastore_pool
from semid_udf.table.locks import VersionLock
from semid_udf.vectors import Reason

log = logging.getLogger(__name__)

MODES = ("full", "append")


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


@dataclass(frozen=True)
class StreamBatch:
    """The stream and micro-batch a commit comes from (manifest columns ``stream_id``, ``batch_id``)."""

    stream_id: str
    batch_id: int


@dataclass(frozen=True)
class Written:
    """What a run wrote, read back and reconciled: the counts, the statistics, and the version's
    runs and files as its commit will name them."""

    run_id: str
    mode: str
    rows_in: int
    rows_new: int
    rows_existing: int  # append: input rows whose item the version already had
    rows_rejected: int
    rows_out: int  # rows of the version after the commit
    rejects_by_reason: Mapping[str, int]
    buckets: Mapping[str, Any]
    seq: int
    segments: tuple[str, ...]
    files: tuple[str, ...]
    timings: Mapping[str, float] = field(default_factory=dict)

    def manifest_row(self) -> dict[str, Any]:
        return {"rows_in": self.rows_in, "rows_out": self.rows_out, "rows_rejected": self.rows_rejected,
                "rows_new": self.rows_new, "seq": self.seq, "segments": list(self.segments),
                "files": list(self.files)}


def lock_version(spark: SparkSession, table: ct.TableName, *, version: str, holder: str, warehouse: str | None,
                 wait_s: float, timeout_s: float) -> VersionLock:
    """The database (created if absent) and the version's writer lock, held by ``holder``."""
    bounded("creating the database", timeout_s, lambda: ct.ensure_database(spark, table, warehouse))
    lock = VersionLock(spark, table, version, holder, wait_s)
    bounded("taking the writer lock", timeout_s + wait_s, lock.acquire)
    return lock


def release_lock(lock: VersionLock, timeout_s: float, failing: bool) -> None:
    """Release the writer lock within ``timeout_s`` seconds, like every other metastore call: a
    metastore that stopped answering (a full disk) must not hold the run forever. When the run
    is already failing, its own error is the one raised and this is logged: the lock view
    stays until the next writer takes it over (its holder, this process, will have ended)."""
    try:
        bounded("releasing the writer lock", timeout_s, lock.release)
    except Exception as e:
        if not failing:
            raise
        log.error("could not release the writer lock %s: %s", lock.view, e)


def last_commit(spark: SparkSession, table: ct.TableName, version: str, timeout_s: float) -> dict[str, Any] | None:
    """The version's last commit (its manifest row), or None when it has none."""
    if not spark.catalog.tableExists(table.name("_manifest")):
        return None
    return cast("dict[str, Any] | None",
                bounded("reading the manifest", timeout_s, lambda: ct.last_commit(spark, table, version)))


def bind(spark: SparkSession, table: ct.TableName, *, version: str, digest: str, mode: str | None, timeout_s: float
         ) -> dict[str, Any] | None:
    """The version's last commit, after refusing another model, or an append with nothing to
    append to (``mode=None``: append when there is a commit, else full)."""
    prev = last_commit(spark, table, version, timeout_s)
    if prev is not None and prev["model_digest"] != digest:
        raise ConfigError(
            f"model version {version} of {table} was published with another model (run {prev['run_id']}): expected "
            f"model digest {prev['model_digest'][:16]}..., got {digest[:16]}... (config, weights or "
            "encode.micro_batch differ); a model version names one model: give this one another version "
            "(semid-train --model-version, or let semid derive it) or publish into another table")
    if mode == "append" and prev is None:
        raise ConfigError(f"--mode append: model version {version} has no complete run in {table}; publish it with "
                          "a full run first (an append adds items to a published version)")
    return prev


def committed_rows(spark: SparkSession, table: ct.TableName, version: str) -> DataFrame:
    """The rows the version's last commit publishes."""
    return spark.table(table.name()).where(F.col("model_version") == version)


def open_publication(spark: SparkSession, table: ct.TableName, *, lock: VersionLock, version: str, digest: str,
                     mode: str | None, run_id: str, id_type: str, levels: int, codebook_size: int,
                     location: str | None, timeout_s: float, stream: StreamBatch | None = None,
                     create_tables: bool = True) -> "Publication":
    """Check the binding (:func:`bind`), create the tables if absent (``create_tables``: a stream
    does it once, before its first micro-batch), and return the run's :class:`Publication`
    (``mode=None``: append when the version has a commit, else full)."""
    previous = bind(spark, table, version=version, digest=digest, mode=mode, timeout_s=timeout_s)
    if create_tables:
        bounded("creating the tables", timeout_s, lambda: ct.ensure_tables(spark, table, levels, id_type, location))
    return Publication(spark, table, lock=lock, version=version, digest=digest,
                       mode=mode or ("append" if previous else "full"), run_id=run_id, levels=levels,
                       codebook_size=codebook_size, previous=previous, timeout_s=timeout_s, stream=stream)


class Publication:
    """One run's way into a model version: a ``running`` manifest row on entry and a ``failed``
    one (with the error) when the block raises before :meth:`commit`; :meth:`write` puts the
    data in place, :meth:`commit` makes it the version, :meth:`clean` removes what no commit
    names. Made by :func:`open_publication`."""

    def __init__(self, spark: SparkSession, table: ct.TableName, *, lock: VersionLock, version: str, digest: str,
                 mode: str, run_id: str, levels: int, codebook_size: int, previous: dict[str, Any] | None,
                 timeout_s: float, stream: StreamBatch | None):
        if mode not in MODES:
            raise ConfigError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
        self.spark, self.table, self.lock, self.version, self.digest = spark, table, lock, version, digest
        self.mode, self.run_id, self.levels, self.codebook_size = mode, run_id, levels, codebook_size
        self.previous, self.timeout_s, self.stream = previous, timeout_s, stream
        self.base_row = {"run_id": run_id, "model_version": version, "mode": mode, "started_at": utcnow(),
                         "model_digest": digest,
                         **({"stream_id": stream.stream_id, "batch_id": stream.batch_id} if stream else {})}
        self.committed = False

    # -- the manifest rows -------------------------------------------------------------------
    def _record(self, row: dict[str, Any]) -> None:
        def insert() -> None:
            with metastore_pool(self.spark):  # the thread running it is the one whose pool counts
                ct.write_manifest(self.spark, self.table, {**self.base_row, **row})

        bounded(f"writing the manifest row ({row['status']})", self.timeout_s, insert)

    def __enter__(self) -> "Publication":
        self._record({"status": "running"})
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None or self.committed:
            return
        manifest = self.table.name("_manifest")
        if isinstance(exc, MetastoreTimeoutError):  # the metastore stopped answering: do not wait on it again
            log.error("not recording the failed run in %s: %s", manifest, exc)
            return
        try:
            self._record({"status": "failed", "finished_at": utcnow(), "error": f"{type(exc).__name__}: {exc}"[:2000]})
        except Exception as m:  # the run's own error is the one raised; say that recording it failed too
            log.error("could not record the failed run in %s: %s", manifest, m)

    # -- the data ----------------------------------------------------------------------------
    def existing(self) -> DataFrame | None:
        """The version's published rows, for the append rules (None for a full run)."""
        return committed_rows(self.spark, self.table, self.version) if self.mode == "append" else None

    def write(self, ids: SemanticIds, *, rows_expected: int, limits: OutputConfig, embedding_col: str,
              step: Callable[[str], None]) -> Written:
        """The run's rejects and rows in partitions of its own, the bucket statistics, and the
        counts read back and reconciled (``rows_expected``: the input's rows)."""
        spark, table, version, run_id = self.spark, self.table, self.version, self.run_id
        timings: dict[str, float] = {}
        if rows_expected != ids.rows_in:
            raise ReconcileError(f"rows: expected {rows_expected} rows out of the encoder (rows in the input), got "
                                 f"{ids.rows_in}")
        if ids.rows_rejected:  # the run's own rejects partition (kept also when the run fails: it says why)
            step("writing rejects")
            t = time.perf_counter()
            self._write_segment(table.q("_rejects"), ids.rejects)
            timings["write_rejects"] = round(time.perf_counter() - t, 3)
        check_reject_rate(ids, limits, embedding_col, run_id)

        append = self.mode == "append" and self.previous is not None
        rows_before = int(cast(dict, self.previous)["rows_out"]) if append else 0
        cap = limits.max_bucket_size
        from_suffixes = self.mode == "full" and not cap  # statistics from the written suffixes; else before the write
        buckets: dict[str, Any] = {}
        if not from_suffixes:
            step("bucket statistics")
            codes = ids.ids.select(*sc.sid_cols(self.levels))
            if self.mode == "append":
                codes = committed_rows(spark, table, version).select(*sc.sid_cols(self.levels)).unionByName(codes)
            buckets = ix.bucket_stats(codes, self.levels, self.codebook_size, rows_before + ids.rows_new)
            if cap and buckets["largest_bucket"] > cap:
                raise InputError(f"bucket size: expected at most {cap} items per code tuple (output.max_bucket_size), "
                                 f"got {buckets['largest_bucket']}")

        files: list[str] = []
        if ids.rows_new:
            step(f"writing {ids.rows_new} rows of {table} version {version} ({self.mode}) to the run's own partition")
            t = time.perf_counter()
            files = self._write_segment(table.q("_data"), ids.ids)
            timings["write_table"] = round(time.perf_counter() - t, 3)

        step("reconciling counts")
        mine = (F.col("model_version") == version) & (F.col("run_id") == run_id)
        stat_cols, read_stats = ix.suffix_stats(ids.rows_new) if from_suffixes else ([], None)
        agg = (cast(Row, spark.table(table.name("_data")).where(mine)
                    .agg(F.count(F.lit(1)).alias("rows"), *stat_cols).first()).asDict()
               if ids.rows_new else {"rows": 0})
        in_segment = int(agg["rows"])
        in_rejects = spark.table(table.name("_rejects")).where(mine).count() if ids.rows_rejected else 0
        existing = int(ids.append.get("rows_existing", 0))
        if (in_segment != ids.rows_new or in_rejects != ids.rows_rejected
                or ids.rows_in != ids.rows_new + existing + ids.rows_rejected):
            raise ReconcileError(
                f"counts: expected rows_in {ids.rows_in} == new {ids.rows_new} + already published {existing} + "
                f"rejected {ids.rows_rejected}, with {ids.rows_new} rows written and {ids.rows_rejected} rejects; got "
                f"{in_segment} rows and {in_rejects} rejects")
        if read_stats is not None and ids.rows_new:
            buckets = read_stats(agg)
        prev = self.previous
        segments = ([*prev["segments"]] if prev and append else []) + ([run_id] if ids.rows_new else [])
        all_files = ([*prev["files"]] if prev and append else []) + files
        return Written(run_id=run_id, mode=self.mode, rows_in=ids.rows_in, rows_new=ids.rows_new,
                       rows_existing=existing, rows_rejected=ids.rows_rejected, rows_out=rows_before + in_segment,
                       rejects_by_reason=dict(ids.rejects_by_reason), buckets=buckets,
                       seq=int(prev["seq"]) + 1 if prev else 1, segments=tuple(segments), files=tuple(all_files),
                       timings=timings)

    def _write_segment(self, qname: str, df: DataFrame) -> list[str]:
        """Write ``df`` as partition (version, run_id) of table ``qname`` (a folder no other run
        uses), register it, and return its data files relative to the table's location. Parquet
        writes columns by name; the partition values are in the folder."""
        spark, timeout = self.spark, self.timeout_s
        root = bounded("locating the table", timeout, lambda: ct.location_of(spark, qname))
        path = f"{root}/{ct.partition_dir(self.version, self.run_id)}"
        df.write.mode("error").parquet(path)
        bounded("registering the run's partition", timeout,
                lambda: ct.add_partition(spark, qname, self.version, self.run_id, path))
        return sorted(relative_to(f, root) for f in spark.read.parquet(path).inputFiles())

    # -- the commit --------------------------------------------------------------------------
    def commit(self, written: Written, details: Mapping[str, Any]) -> None:
        """Make ``written`` the version: the writer lock is checked to be still ours, then one
        ``complete`` manifest row."""
        self.lock.check()
        self._record({**written.manifest_row(), "details": dict(details), "status": "complete",
                      "finished_at": utcnow()})
        self.committed = True

    def clean(self, written: Written, staging: str | None = None) -> dict[str, Any]:
        """Remove the version's data partitions and folders that its last commit does not name
        (the runs it replaced and what killed runs left), their rejects, and ``staging`` (the
        run's staged codes). Runs after the commit, under the lock; a failure here leaves files
        no reader sees and is reported in the result, not raised (the run is committed), and the
        next run of the version tries again. Returns ``removed`` and ``cleanup_errors``."""
        spark, table, version, keep = self.spark, self.table, self.version, set(written.segments)
        files = Files(spark)
        removed: list[str] = []
        errors: list[str] = []
        try:
            for suffix in ("_data", "_rejects"):
                root = ct.location_of(spark, table.q(suffix))
                external = ct.table_type(spark, table.name(suffix)) == "EXTERNAL"
                for run in ct.partitions(spark, table.q(suffix), version):
                    if run not in keep:
                        ct.drop_partition(spark, table.q(suffix), version, run)  # a managed table's files go with it
                        if suffix == "_data":
                            removed.append(run)
                        if external:
                            files.delete(f"{root}/{ct.partition_dir(version, run)}")
                if suffix == "_data":  # folders of killed runs that never registered a partition
                    folder = f"{root}/model_version={ct.escape_path_name(version)}"
                    for child in files.children(folder) or []:
                        if child.startswith("run_id=") and unquote(child[len("run_id="):]) not in keep:
                            files.delete(f"{folder}/{child}")
                            removed.append(child)
            if staging:  # the run is complete: its staged codes are no longer needed
                files.delete(staging)
        except Exception as e:  # reported in the log and the result: the commit stands
            errors.append(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            log.warning("clean-up after the commit failed (the run is complete; the next run retries): %s", errors[-1])
        return {"removed": sorted(set(removed)), **({"cleanup_errors": errors} if errors else {})}


def relative_to(uri: str, root: str) -> str:
    """``uri`` relative to the table location ``root`` (a file the run wrote must be under it)."""
    f, r = uri_path(uri), uri_path(root).rstrip("/")
    if not f.startswith(r + "/"):
        raise ReconcileError(f"written file {uri}: expected under the table's location {root}")
    return f[len(r) + 1:]


def check_reject_rate(ids: SemanticIds, limits: OutputConfig, embedding_col: str, run_id: str) -> None:
    """Refuse a run with no valid row, or more rejects than ``output.max_reject_rate``, naming
    the commonest reason and an item of it."""
    by_reason, rows_in = ids.rejects_by_reason, ids.rows_in
    if ids.rows_valid and ids.rows_rejected <= limits.max_reject_rate * rows_in:
        return
    top = max(by_reason, key=cast("Callable[[str], int]", by_reason.get))  # every key is in it
    ex = cast(Row, ids.rejects.where(F.col("reason") == top).select("item_id", "detail").first())  # a reject of reason top
    if by_reason.get(Reason.WRONG_LENGTH.value) == rows_in:
        raise InputError(f"column {embedding_col!r}: {ex['detail'].split(': ', 1)[-1]} for every row "
                         f"(the model's input_dim), e.g. item {ex['item_id']!r}")
    raise InputError(
        f"rejects: expected at most {limits.max_reject_rate:.2%} of rows (output.max_reject_rate), got "
        f"{ids.rows_rejected} of {rows_in}; reasons {dict(by_reason)}; e.g. item {ex['item_id']!r}: "
        f"{ex['detail']} (see the rejects table, run_id {run_id})")
