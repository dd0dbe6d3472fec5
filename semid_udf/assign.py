"""``semid-assign`` as a library call: input -> validated codes -> table, rejects, manifest.

One scan of the vectors: Spark flags cheap row defects, the Arrow function encodes the
rest (and flags null elements and NaN/Inf), and everything after that (duplicates, the
collision suffix, the writes) moves ids, hashes and codes only.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import platform
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import pyarrow as pa
from pyspark import InheritableThread, StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from . import staging
from . import table as tb
from .checkpoint import CheckpointBlob
from .config import JobConfig, to_dict
from .errors import ConfigError, InputError, ReconcileError
from .session import check_safe_settings
from .reader import InputPlan, is_local, plan_input
from .udf import make_map_fn, make_reader_fn, output_fields

log = logging.getLogger(__name__)

ROWS_PER_FILE = 1_000_000
MIN_ROWS_PER_FILE = 100_000


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


def output_files(rows: int, cores: int) -> int:
    """Files per version: at most ROWS_PER_FILE rows each, and one per core (while each keeps
    at least MIN_ROWS_PER_FILE rows) so that sorting and writing them uses every core."""
    return max(1, math.ceil(rows / ROWS_PER_FILE), min(cores, rows // MIN_ROWS_PER_FILE))


def _size_bin(size: int) -> int:
    """Histogram bin of a bucket size: k for sizes in (2^(k-1), 2^k]."""
    return max(0, (size - 1).bit_length())


def _stats(by_bin: dict[int, int], largest: int, rows: int) -> dict[str, Any]:
    buckets = sum(by_bin.values())
    return {
        "buckets": buckets,
        "largest_bucket": largest,
        "unique_rate_before_suffix": round(buckets / rows, 6) if rows else None,
        "bucket_size_histogram": {f"<={1 << k}": n for k, n in sorted(by_bin.items()) if n},
    }


def bucket_stats(codes: DataFrame, levels: int, codebook_size: int, rows: int) -> dict[str, Any]:
    """Bucket = items sharing one code tuple. One small job: how many buckets of each size."""
    key = tb.bucket_key(levels, codebook_size)
    keys = tb.sid_cols(levels) if key is None else [key.alias("_bucket")]
    by_size = {int(r["size"]): int(r["buckets"]) for r in
               codes.groupBy(*keys).agg(F.count(F.lit(1)).alias("size"))
               .groupBy("size").agg(F.count(F.lit(1)).alias("buckets")).collect()}
    by_bin: dict[int, int] = {}
    for size, n in by_size.items():
        by_bin[_size_bin(size)] = by_bin.get(_size_bin(size), 0) + n
    return _stats(by_bin, max(by_size, default=0), rows)


def suffix_marks(top: int) -> list[int]:
    """The suffixes whose row counts give the size bins up to ``top``: 0, 1, 2, 4, ..., 2**top."""
    return [0] + [1 << k for k in range(top + 1)]


def bins_from_suffix_counts(rows_with_suffix: dict[int, int], top: int) -> dict[int, int]:
    """Buckets per size bin (``_size_bin``) from the number of rows with suffix 0, 1, 2, 4, ...,
    ``2**top``: the buckets with more than ``m`` items are the rows with suffix ``m``."""
    marks = suffix_marks(top)
    by_bin = {k: rows_with_suffix[marks[k]] - rows_with_suffix[marks[k + 1]] for k in range(top + 1)}
    if any(n < 0 for n in by_bin.values()):  # suffixes of a bucket run 0, 1, 2, ... with no gaps
        raise ReconcileError(f"bucket statistics: expected suffixes without gaps in every bucket, got more rows "
                             f"with a higher suffix than with a lower one (rows per suffix {rows_with_suffix})")
    return by_bin


def suffix_stats(rows: int) -> tuple[list[Any], Callable[[dict[str, Any]], dict[str, Any]]]:
    """The same statistics from the written version's suffixes (full mode, where the written
    rows are all the version's rows), in the aggregate that counts them for the
    reconciliation: no job of their own, and no bucket sizes to compute. Suffixes run 0, 1,
    ..., size - 1 in every bucket, so the buckets with more than ``m`` items are the rows with
    suffix ``m`` (``bins_from_suffix_counts``). Returns the aggregate columns and a function
    of the aggregate's row that gives the statistics."""
    suffix = F.col("sid_suffix")
    top = _size_bin(max(rows, 1))
    marks = suffix_marks(top)
    cols = [F.max(suffix).alias("largest_suffix")] + [F.count_if(suffix == mark).alias(f"suffix_{mark}") for mark in marks]

    def read(m: dict[str, Any]) -> dict[str, Any]:
        at = {mark: int(m[f"suffix_{mark}"]) for mark in marks}
        largest = int(m["largest_suffix"]) + 1 if m["largest_suffix"] is not None else 0
        return _stats(bins_from_suffix_counts(at, top), largest, rows)

    return cols, read


def set_shuffle_partitions(spark: SparkSession, rows: int) -> None:
    """Unless the user set it, size spark.sql.shuffle.partitions from the input: Spark's 200
    made every small shuffle of ids and codes cost hundreds of tasks; too few would make
    each sort of a huge input one task. 2 per core, and at least one per 2M rows."""
    if spark.sparkContext.getConf().contains("spark.sql.shuffle.partitions"):
        return
    n = max(2 * spark.sparkContext.defaultParallelism, math.ceil(rows / 2_000_000))
    spark.conf.set("spark.sql.shuffle.partitions", str(n))
    log.info("spark.sql.shuffle.partitions = %d for %d input rows", n, rows)


def run_assign(spark: SparkSession, cfg: JobConfig, blob: CheckpointBlob, *, table: str, input_path: str | None = None,
               input_table: str | None = None, warehouse: str | None = None, mode: str | None = None,
               run_id: str | None = None) -> RunResult:
    mode = mode or cfg.output.mode
    db, _ = tb.check_table_name(table)
    name = table if "." in table else f"default.{table}"
    rejects_name, manifest_name = f"{name}_rejects", f"{name}_manifest"
    version = blob.model_version
    levels = int(blob.model["levels"])
    sids = tb.sid_cols(levels)
    res = RunResult(run_id=run_id or new_run_id(), model_version=version, table=name, mode=mode)
    sc = spark.sparkContext
    check_safe_settings(spark)  # also when called as a library, not only through build_session
    t_start = time.perf_counter()
    started_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.output.arrow_batch))

    clock = {"label": "", "t": time.perf_counter()}

    def step(label: str) -> None:
        """Name the Spark jobs that follow (Spark UI, logs) and time each step."""
        now = time.perf_counter()
        if clock["label"]:
            res.timings[f"step: {clock['label']}"] = round(now - clock["t"], 3)
        clock.update(label=label, t=now)
        sc.setJobDescription(f"semid {res.run_id}: {label}")
        log.info("%s", label)

    step("checking the input")
    source = read_source(spark, cfg, input_path, input_table)
    res.details["input"] = input_path or input_table
    step("counting the input")
    n_input = source.rows()
    if n_input == 0:
        raise InputError("input: expected at least 1 row, got 0: refusing to publish an empty version")
    set_shuffle_partitions(spark, n_input)
    enc = Encoding(spark, cfg, blob, source, levels)
    base_row = {"run_id": res.run_id, "model_version": version, "mode": mode, "started_at": started_at}
    background = None
    if cfg.output.shards == 1:
        # Encoding needs no table: start it now, so that the metastore work below (seconds
        # with an embedded metastore) runs while the workers encode. Its first job must be
        # running before the metastore work starts: planning it waits for the catalog while
        # that work holds it (bench, 1M rows: its first task ran 1.6 s later when that work went first).
        step("starting the encode")
        background = enc.start(res)
    try:
        if background is not None:
            background.wait_started()
        with other_pool(sc, "semid_metastore"):  # with FAIR scheduling, not queued behind the encode tasks
            step("creating the tables if absent")
            tb.ensure_database(spark, db, warehouse)
            tb.ensure_table(spark, name, tb.table_columns(source.id_type, levels), ["model_version"])
            tb.ensure_table(spark, rejects_name, tb.REJECT_COLUMNS, ["model_version", "run_id"])
            tb.ensure_table(spark, manifest_name, tb.MANIFEST_COLUMNS, [])
            tb.create_views(spark, name)
            step("recording the run as running")
            tb.write_manifest(spark, manifest_name, {**base_row, "status": "running"})
    except BaseException:
        enc.close(background)
        raise
    try:
        if background is None:
            enc.encode_sharded(res, name, step)
        else:
            step("encoding: validating and assigning codes to every row")
            background.wait()
        _publish(spark, cfg, res, enc, n_input, name, rejects_name, levels, sids, step)
    except BaseException as e:
        res.timings["total"] = round(time.perf_counter() - t_start, 3)
        try:
            tb.write_manifest(spark, manifest_name, {
                **base_row, "status": "failed", "finished_at": dt.datetime.now(dt.timezone.utc).replace(tzinfo=None),
                "error": f"{type(e).__name__}: {e}"[:2000], "details": {"timings": res.timings}})
        except Exception as m:  # the run's own error matters more; say that the manifest failed too
            log.error("could not record the failed run in %s: %s", manifest_name, m)
        raise
    finally:
        enc.close(background)
    res.timings["total"] = round(time.perf_counter() - t_start, 3)
    res.details.update({
        "input": input_path or input_table, "rejects_by_reason": res.rejects_by_reason, "buckets": res.buckets,
        "timings": res.timings, "versions": library_versions(), "config": to_dict(cfg),
        "model": blob.model, "checkpoint_sha256": blob.config["weights_sha256"],
    })
    step("writing the manifest")
    tb.write_manifest(spark, manifest_name, {
        **base_row, "status": "complete", "finished_at": dt.datetime.now(dt.timezone.utc).replace(tzinfo=None),
        "rows_in": res.rows_in, "rows_out": res.rows_out, "rows_rejected": res.rows_rejected,
        "rows_new": res.rows_new, "details": res.details})
    if "resume" in res.details:  # the run is complete: its staged codes are no longer needed
        staging.clean(spark, res.details["resume"]["staging"])
    step("done")
    sc.setJobDescription(None)
    return res


@dataclass
class Source:
    """The input as the encode step sees it: planned for pyarrow in the tasks, or a Spark DataFrame."""

    id_type: T.DataType
    plan: InputPlan | None = None
    frame: DataFrame | None = None  # (item_id, embedding), Spark's reader
    raw: DataFrame | None = None

    def rows(self) -> int:
        return self.plan.rows if self.plan else self.raw.count()  # Spark: Parquet footers, no scan of the vectors

    def file_stamps(self, fs: staging.Fs) -> list[tuple[str, int, int]]:
        if self.plan:
            return list(self.plan.files)
        return [(f, *fs.file_stamp(f)) for f in sorted(self.raw.inputFiles())]


_SPARK_IDS = {pa.int32(): T.IntegerType(), pa.int64(): T.LongType(), pa.string(): T.StringType()}


def read_source(spark: SparkSession, cfg: JobConfig, input_path: str | None, input_table: str | None) -> Source:
    """``input.reader``: arrow reads the Parquet in the Python tasks (only Python touches the
    vectors); spark reads it with Spark; auto picks arrow for a local or mounted path."""
    ic = cfg.input
    arrow = ic.reader == "arrow" or (ic.reader == "auto" and input_path is not None and is_local(input_path))
    if arrow:
        if input_path is None:
            raise ConfigError("input.reader=arrow: expected --input PATH (a Parquet file or folder), got --input-table; "
                              "use input.reader=spark or auto for tables")
        target = int(spark._jsparkSession.sessionState().conf().filesMaxPartitionBytes())  # parsed, units and all
        plan = plan_input(input_path, ic.id_col, ic.embedding_col, ic.cast_double, target_bytes=target,
                          cores=spark.sparkContext.defaultParallelism)
        log.info("reader: pyarrow in the tasks (%d units of up to %d MB)", len(plan.units), target >> 20)
        return Source(_SPARK_IDS[plan.id_type], plan=plan)
    raw = tb.read_input(spark, input_path, input_table)
    frame = tb.normalise_input(raw, ic.id_col, ic.embedding_col, ic.cast_double)
    log.info("reader: Spark")
    return Source(frame.schema["item_id"].dataType, frame=frame, raw=raw)


def count_rows(coded: DataFrame) -> tuple[dict[str | None, int], int]:
    """Rows per reason (``None``: valid) and the number of ids with more than one valid row."""
    good = F.col("reason").isNull()
    per_key = coded.groupBy("reason", F.when(good, F.col("item_id")).alias("_id")).agg(F.count(F.lit(1)).alias("n"))
    rows = per_key.groupBy("reason").agg(F.sum("n").alias("rows"),
                                         F.count_if(F.col("reason").isNull() & (F.col("n") > 1)).alias("repeated"))
    counts, repeated = {}, 0
    for r in rows.collect():
        counts[r["reason"]] = int(r["rows"])
        repeated += int(r["repeated"])
    return counts, repeated


class Encoding:
    """The encode step: every input row becomes codes or a reject reason (once), with the
    duplicate ids classified; the result is persisted for the writes that follow."""

    def __init__(self, spark: SparkSession, cfg: JobConfig, blob: CheckpointBlob, source: Source, levels: int):
        self.spark, self.cfg, self.source = spark, cfg, source
        self.dim = int(blob.model["input_dim"])
        self.codebook_size = int(blob.model["codebook_size"])
        self.schema = T.StructType([T.StructField("item_id", source.id_type)] + [
            T.StructField(n, {"string": T.StringType(), "int64": T.LongType(), "int32": T.IntegerType()}[str(t_)])
            for n, t_ in output_fields(levels)])
        self.bc = spark.sparkContext.broadcast(blob)
        self.c: DataFrame | None = None
        self.counts: dict[str | None, int] = {}
        if not source.plan:
            self.fn = make_map_fn(self.bc, cfg.encode, cfg.plugin, "item_id", "embedding")

    def shard(self, k: int, shards: int) -> DataFrame:
        """Codes of shard ``k`` of ``shards`` (all rows when ``shards`` is 1)."""
        if self.source.plan:
            # One task per unit: task i gets the number i and reads units[i] (no Python rows to convert).
            plan, cfg = self.source.plan, self.cfg
            units = [u for u in plan.units if u.index % shards == k]
            fn = make_reader_fn(self.bc, plan, units, cfg.encode, cfg.plugin, cfg.output.arrow_batch)
            return self.spark.range(0, len(units), 1, max(1, len(units))).mapInArrow(fn, self.schema)
        frame = self.source.frame
        if shards > 1:
            frame = frame.where(F.pmod(F.xxhash64(F.col("item_id")), F.lit(shards)) == k)
        return frame.mapInArrow(self.fn, self.schema)

    def _classify_and_count(self, coded: DataFrame, res: RunResult) -> None:
        """Persist the coded rows, count them by reason and count the ids that occur more than
        once, in the job that encodes (one aggregate keyed by reason and, for valid rows, the
        id). Duplicate ids are then classified with a window over ids (a sort of every row)
        only if there are any."""
        t = time.perf_counter()
        self.c = coded.persist(StorageLevel.MEMORY_AND_DISK)
        # With adaptive execution, Spark fills a cache in a job of its own and only then runs
        # the aggregate's first stage over it, a second pass over every row; without, the
        # encode tasks fill the cache and feed the aggregate in one stage (bench, 1M rows: 2.4 s less).
        # The setting is the session's: the metastore work planned meanwhile in the main thread
        # (DDL, the one-row manifest insert) runs without adaptive execution too, which changes
        # no result and costs nothing there.
        with session_conf(self.spark, "spark.sql.adaptive.enabled", "false"):
            self.counts, repeated = count_rows(self.c)
        if repeated:
            log.info("%d item ids occur more than once: classifying their copies", repeated)
            plain = self.c
            self.c = tb.classify_duplicates(plain).persist(StorageLevel.MEMORY_AND_DISK)
            self.counts = {r["reason"]: int(r["count"]) for r in self.c.groupBy("reason").count().collect()}
            plain.unpersist()
        res.timings["encode"] = round(time.perf_counter() - t, 3)

    def start(self, res: RunResult) -> Background:
        sc = self.spark.sparkContext
        return Background(sc, f"semid {res.run_id}: encoding: validating and assigning codes to every row",
                          lambda: self._classify_and_count(self.shard(0, 1), res))

    def encode_sharded(self, res: RunResult, name: str, step: Callable[[str], None]) -> None:
        cfg = self.cfg
        fs = staging.Fs(self.spark)
        root = staging.table_location(self.spark, name) + "_semid_staging"
        settings = {"encode": to_dict(cfg.encode), "plugin": to_dict(cfg.plugin), "input": to_dict(cfg.input)}
        fp = staging.fingerprint(self.source.file_stamps(fs), str(res.details.get("input")), res.model_version,
                                 settings, cfg.output.shards)
        coded, res.details["resume"] = staging.encode_sharded(self.spark, self.shard, cfg.output.shards, root, fp, step)
        step("classifying duplicates and counting")
        self._classify_and_count(coded, res)

    def close(self, background: Background | None) -> None:
        if background is not None:
            background.cancel()
        if self.c is not None:
            self.c.unpersist()
        self.bc.destroy()


class Background:
    """One Spark action in another thread, in its own job group; ``wait`` re-raises its error."""

    def __init__(self, sc: Any, description: str, fn: Callable[[], None]):
        self.sc, self.group, self.description = sc, f"semid-{uuid.uuid4().hex[:12]}", description
        self.error: BaseException | None = None
        self.done = False

        def target() -> None:
            try:
                sc.setJobGroup(self.group, description, interruptOnCancel=True)
                fn()
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

    def wait(self) -> None:
        self.thread.join()
        if self.error is not None:
            raise self.error

    def cancel(self) -> None:
        """Stop the action if it still runs (the main thread failed or finished with it)."""
        if not self.done:
            self.sc.cancelJobGroup(self.group)
        self.thread.join()


@contextlib.contextmanager
def session_conf(spark: SparkSession, key: str, value: str) -> Iterator[None]:
    """``key`` is ``value`` for the queries planned meanwhile; then the session's own value again."""
    old = spark.conf.get(key, None)
    spark.conf.set(key, value)
    try:
        yield
    finally:
        if old is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, old)


@contextlib.contextmanager
def other_pool(sc: Any, pool: str) -> Iterator[None]:
    """Jobs of this thread go to scheduler pool ``pool`` (FAIR mode shares the cores between pools)."""
    sc.setLocalProperty("spark.scheduler.pool", pool)
    try:
        yield
    finally:
        sc.setLocalProperty("spark.scheduler.pool", None)


def _publish(spark, cfg, res, enc: Encoding, n_input, name, rejects_name, levels, sids, step) -> None:
    """Rejects, bucket statistics, the table, and the reconciliation, from the encoded rows."""
    dim = enc.dim
    c, counts = enc.c, dict(enc.counts)
    res.rows_in = sum(counts.values())
    good = counts.pop(None, 0)
    res.rejects_by_reason = dict(sorted(counts.items()))
    res.rows_rejected = sum(counts.values())
    if n_input != res.rows_in:
        raise ReconcileError(f"rows: expected {n_input} rows out of the encoder (rows in the input), got {res.rows_in}")

    if res.rows_rejected:  # a new run_id partition: with no rejects there is nothing to write or replace
        step("writing rejects")
        t = time.perf_counter()
        (c.where(F.col("reason").isNotNull())
         .select(F.col("item_id").cast("string"), "reason", "detail", F.lit(res.model_version), F.lit(res.run_id))
         .write.insertInto(rejects_name, overwrite=True))
        res.timings["write_rejects"] = round(time.perf_counter() - t, 3)
    _check_reject_rate(c, cfg, res, dim, good)

    kept = c.where(F.col("reason").isNull()).select("item_id", *sids, "embedding_hash")
    base = None
    rows_before = 0
    if res.mode == "append":
        step("append: matching items already in the table")
        existing = spark.table(name).where(F.col("model_version") == res.model_version)
        rows_before = existing.count()
        old = kept.join(existing.select("item_id", F.col("embedding_hash").alias("_old_hash")), "item_id", "inner")
        agg = old.agg(F.count(F.lit(1)).alias("n"),
                      F.sum((F.col("embedding_hash") != F.col("_old_hash")).cast("int")).alias("changed")).first()
        rows_existing, changed = int(agg["n"]), int(agg["changed"] or 0)
        res.details["rows_existing"] = rows_existing
        res.details["rows_embedding_changed"] = changed
        if changed:
            log.warning("%d items already have an ID but arrived with a changed embedding: their published ID is kept "
                        "(see README, 'Append mode')", changed)
        kept = kept.join(existing.select("item_id"), "item_id", "left_anti")
        base = existing.groupBy(*sids).agg((F.max("sid_suffix") + 1).alias("_next"))
        all_codes = existing.select(*sids).unionByName(kept.select(*sids))
        res.rows_new = good - rows_existing
    else:
        all_codes = kept.select(*sids)
        res.rows_new = good

    cap = cfg.output.max_bucket_size
    from_suffixes = res.mode == "full" and not cap  # statistics from the written suffixes; else before the write
    if not from_suffixes:
        step("bucket statistics")
        res.buckets = bucket_stats(all_codes, levels, enc.codebook_size, rows_before + res.rows_new)
        if cap and res.buckets["largest_bucket"] > cap:
            raise InputError(f"bucket size: expected at most {cap} items per code tuple (output.max_bucket_size), "
                             f"got {res.buckets['largest_bucket']}")

    step(f"writing {res.rows_new} rows to {name} (model_version={res.model_version}, {res.mode})")
    t = time.perf_counter()
    files = cfg.output.files_per_version or output_files(res.rows_new, spark.sparkContext.defaultParallelism)
    out = tb.with_suffix(kept, levels, enc.codebook_size, files, base)
    out = out.select(
        "item_id", *sids, "sid_suffix", tb.semantic_id(levels).alias("semantic_id"), "embedding_hash",
        F.lit(res.run_id).alias("run_id"), F.lit(res.model_version).alias("model_version"))
    if res.rows_new:
        out.write.insertInto(name, overwrite=(res.mode == "full"))
    res.timings["write_table"] = round(time.perf_counter() - t, 3)

    step("reconciling counts")
    published = spark.table(name).where(F.col("model_version") == res.model_version)
    stat_cols, read_stats = suffix_stats(res.rows_new) if from_suffixes else ([], None)
    agg = published.agg(F.count(F.lit(1)).alias("rows"), *stat_cols).first().asDict()
    in_table = int(agg["rows"])
    in_rejects = (spark.table(rejects_name)
                  .where((F.col("model_version") == res.model_version) & (F.col("run_id") == res.run_id)).count())
    expected_table = rows_before + res.rows_new
    res.rows_out = in_table
    if in_table != expected_table or in_rejects != res.rows_rejected or res.rows_in != res.rows_out + res.rows_rejected:
        raise ReconcileError(
            f"counts: expected rows_in {res.rows_in} == rows_out + rows_rejected with {expected_table} rows in "
            f"{name} and {res.rows_rejected} rejects; got {in_table} rows and {in_rejects} rejects")
    if read_stats is not None:
        res.buckets = read_stats(agg)


def _check_reject_rate(c: DataFrame, cfg: JobConfig, res: RunResult, dim: int, good: int) -> None:
    if good == 0 or res.rows_rejected > cfg.output.max_reject_rate * res.rows_in:
        top = max(res.rejects_by_reason, key=res.rejects_by_reason.get)
        ex = c.where(F.col("reason") == top).select("item_id", "detail").first()
        if res.rejects_by_reason.get("wrong_length") == res.rows_in:
            raise InputError(f"column 'embedding': expected length {dim} (the model's input_dim), got {ex['detail'].split('got ')[-1]} "
                             f"for every row, e.g. item {ex['item_id']!r}")
        raise InputError(
            f"rejects: expected at most {cfg.output.max_reject_rate:.2%} of rows (output.max_reject_rate), got "
            f"{res.rows_rejected} of {res.rows_in}; reasons {res.rejects_by_reason}; e.g. item {ex['item_id']!r}: "
            f"{ex['detail']} (see the rejects table, run_id {res.run_id})")
