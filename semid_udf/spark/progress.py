"""Progress of a long Spark action: rows done of N, items/s and an ETA.

On a terminal it is one line that updates in place; otherwise (spark-submit and Databricks
logs) a log line about every ``interval_s`` seconds; nothing with ``-q`` (the ``semid``
loggers at WARNING). Rows are estimated from the action's tasks: the rows of the input
times the share of its largest stage's tasks that have finished, so they move in steps of
one task. A classic session is polled through Spark's status tracker (the action runs in a
job group); a Spark Connect session reports progress to a handler.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any, Callable, cast

from semid_udf.spark.files import is_connect

log = logging.getLogger("semid_udf.spark.progress")


def fmt_line(label: str, done: int, total: int, elapsed: float) -> str:
    rate = done / elapsed if elapsed > 0 else 0.0
    share = done / total if total else 0.0
    eta = f"ETA {(total - done) / rate:.0f} s" if rate > 0 and done < total else ("done" if done >= total else "ETA ?")
    return f"{label}: {done:,} of {total:,} rows ({share:.0%}), {rate:,.0f} items/s, {eta}"


class Progress:
    """Report the progress of what runs inside ``with Progress(...)`` (see the module doc).

    ``group``: on a classic session, the job group the action's jobs run in."""

    def __init__(self, spark: Any, total: int | None, label: str, group: str | None = None, interval_s: float = 10.0,
                 stream: Any = None):
        self.spark, self.total, self.label, self.group = spark, total, label, group
        self.interval_s, self.stream = interval_s, stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._stop = threading.Event()
        self._share = 0.0
        self._lock = threading.Lock()
        self._t0 = time.perf_counter()
        self._last_log = self._t0
        self._thread: threading.Thread | None = None
        self._handler: Callable[..., None] | None = None
        self.lines: list[str] = []  # every line reported (tests read them)

    @property
    def enabled(self) -> bool:
        return bool(self.total) and log.isEnabledFor(logging.INFO)

    def _emit(self, final: bool = False) -> None:
        elapsed = time.perf_counter() - self._t0
        with self._lock:
            share = 1.0 if final else self._share
        total = cast(int, self.total)  # only called when enabled: total is set
        done = min(total, int(round(share * total)))
        line = fmt_line(self.label, done, total, elapsed)
        now = time.perf_counter()
        if self.tty:
            self.stream.write("\r" + line + ("\n" if final else ""))
            self.stream.flush()
            self.lines.append(line)
        elif final or now - self._last_log >= self.interval_s:
            self._last_log = now
            log.info("%s", line)
            self.lines.append(line)

    def _update(self, stages: list[tuple[int, int]]) -> None:
        """``stages``: (tasks, completed tasks) of the action's stages so far."""
        if not stages:
            return
        tasks, completed = max(stages)
        with self._lock:
            self._share = max(self._share, completed / tasks if tasks else 0.0)

    def _poll_classic(self) -> None:
        tracker = self.spark.sparkContext.statusTracker()  # classic sessions only
        group = cast(str, self.group)  # __enter__ polls only with a group
        while not self._stop.wait(1.0 if self.tty else min(1.0, self.interval_s)):
            self._update([(st.numTasks, st.numCompletedTasks) for st in group_stages(tracker, group)])
            self._emit()

    def _connect_handler(self, stages: Any = None, inflight_tasks: int = 0, operation_id: Any = None,
                         done: bool = False, **_: Any) -> None:
        self._update([(s.num_tasks, s.num_completed_tasks) for s in (stages or [])])

    def _tick(self) -> None:
        while not self._stop.wait(1.0 if self.tty else min(1.0, self.interval_s)):
            self._emit()

    def __enter__(self) -> "Progress":
        if not self.enabled:
            return self
        if is_connect(self.spark):
            self._handler = self._connect_handler
            self.spark.registerProgressHandler(self._handler)
            self._thread = threading.Thread(target=self._tick, name="semid-progress", daemon=True)
        elif self.group is not None:
            self._thread = threading.Thread(target=self._poll_classic, name="semid-progress", daemon=True)
        if self._thread is not None:
            self._thread.start()
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if not self.enabled:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._handler is not None:
            self.spark.removeProgressHandler(self._handler)
        if exc_type is None:
            self._emit(final=True)
        elif self.tty:
            self.stream.write("\n")


def group_stages(tracker: Any, group: str) -> list[Any]:
    """What Spark's status tracker knows of the stages of job group ``group``'s jobs (their
    ``SparkStageInfo``; classic sessions only)."""
    return [st for j in tracker.getJobIdsForGroup(group) if (job := tracker.getJobInfo(j)) is not None
            for s in job.stageIds if (st := tracker.getStageInfo(s)) is not None]
