"""The concurrency a run uses, in one place: a bounded wait on a call that may never return,
the scheduler pool of the metastore work, and one Spark action run in another thread.

Rule for every caller: a session-wide setting (``spark.conf``) is changed only by the thread
that starts the other threads, before it starts them or after it has joined them, never while
another thread of the run plans a query. (Thread-local properties, the job group and the
scheduler pool, are each thread's own.)
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from typing import Any, Callable, Iterator

from pyspark.sql import SparkSession

from semid_udf.errors import MetastoreTimeoutError
from semid_udf.spark.files import is_connect
from semid_udf.spark.progress import group_stages

log = logging.getLogger(__name__)


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


class Background:
    """One Spark action in another thread (classic sessions only: in its own job group, so its
    progress can be followed and it can be cancelled); ``wait`` re-raises its error.
    ``fn`` receives the job group, which exists before the thread starts."""

    def __init__(self, spark: SparkSession, description: str, fn: Callable[[str], Any]):
        self.spark, self.sc = spark, spark.sparkContext
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

    def cancel(self, settle_s: float = 10.0) -> None:
        """Stop the action if it still runs (the main thread failed or finished with it). Its
        job fails at once, but its tasks are killed asynchronously: wait (at most ``settle_s``)
        until none of them runs, so that Spark's lines about them come before whatever the
        caller logs next (a failed run's last line is its error)."""
        if self.done:
            self.thread.join()
            return
        self.sc.cancelJobGroup(self.group)
        self.thread.join()
        tracker = self.sc.statusTracker()
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline and any(st.numActiveTasks for st in group_stages(tracker, self.group)):
            time.sleep(0.05)
