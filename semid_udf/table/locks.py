"""One writer at a time: per model version of a table, and per local warehouse.

- :class:`VersionLock`: a writer of ``(table, model version)`` holds a view named
  ``<table>__writer_<digest of the version>`` in the metastore; creating a view that exists
  fails in the metastore itself, so two writers cannot both create it. The view's
  properties say who holds it (run, host, pid) and when it last proved alive (a heartbeat
  every ``HEARTBEAT_S``). A lock whose holder is gone (a process of this host that no
  longer exists, or no heartbeat for ``STALE_S``) is taken over; otherwise a second writer
  waits up to ``output.lock_wait_s`` and then fails, naming the holder. SQL only: the same
  on Spark Connect.
- :class:`WarehouseLock`: the embedded Derby metastore that ``--warehouse`` sets up admits
  one process at a time; a second process would wait on Derby's own lock and fail after
  minutes with an unrelated message. An OS file lock on ``<warehouse>/.semid.lock`` (freed by
  the kernel when the process dies, however it dies) makes it wait up to
  ``output.lock_wait_s`` and then fail naming the holder.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from semid_udf.table.catalog import TableName, lit
from semid_udf.errors import LockError
from semid_udf.paths import warehouse_path

log = logging.getLogger(__name__)

HEARTBEAT_S = 10.0
STALE_S = 60.0
POLL_S = 1.0


def _proc_start(pid: int) -> str | None:
    """The start time of process ``pid`` on this host (tells a live process from a reused pid)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def me(run_id: str) -> dict[str, str]:
    pid = os.getpid()
    return {"semid.run_id": run_id, "semid.host": socket.gethostname(), "semid.pid": str(pid),
            "semid.pid_start": _proc_start(pid) or "", "semid.since": f"{time.time():.0f}",
            "semid.heartbeat": f"{time.time():.0f}"}


def holder_gone(props: dict[str, str], now: float) -> str | None:
    """Why the lock's holder is known to be gone (None if it may be alive)."""
    if props.get("semid.host") == socket.gethostname() and props.get("semid.pid", "").isdigit():
        start = _proc_start(int(props["semid.pid"]))
        if start is None or start != props.get("semid.pid_start"):
            return f"process {props['semid.pid']} on this host has ended"
    beat = float(props.get("semid.heartbeat", "0") or 0)
    if now - beat > STALE_S:
        return f"no heartbeat for {now - beat:.0f} s"
    return None


def describe(props: dict[str, str]) -> str:
    since = float(props.get("semid.since", "0") or 0)
    return (f"run {props.get('semid.run_id', '?')} (host {props.get('semid.host', '?')}, pid "
            f"{props.get('semid.pid', '?')}, since {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(since))} UTC)")


class VersionLock:
    """Hold the writer lock of ``(name, model_version)`` while the ``with`` block runs."""

    def __init__(self, spark: Any, name: TableName, model_version: str, run_id: str, wait_s: float):
        self.spark, self.name, self.version, self.run_id, self.wait_s = spark, name, model_version, run_id, wait_s
        self.view = name.name(f"__writer_{hashlib.sha256(model_version.encode()).hexdigest()[:12]}")
        self.qview = ".".join(f"`{p}`" for p in self.view.split("."))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost: str | None = None

    def _props(self) -> dict[str, str] | None:
        if not self.spark.catalog.tableExists(self.view):
            return None
        return {r["key"]: r["value"] for r in self.spark.sql(f"SHOW TBLPROPERTIES {self.qview}").collect()}

    def _create(self) -> bool:
        props = me(self.run_id)
        body = ", ".join(f"{lit(k)} = {lit(v)}" for k, v in props.items())
        try:
            self.spark.sql(f"CREATE VIEW {self.qview} TBLPROPERTIES ({body}) AS SELECT {lit(self.version)} AS "
                           f"model_version, {lit(self.run_id)} AS run_id")
        except Exception as e:  # the view exists: someone holds the lock (the metastore decided)
            if "ALREADY_EXISTS" in str(e) or "already exists" in str(e):
                return False
            raise
        return True

    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait_s
        waited = False
        while True:
            if self._create():
                held = self._props() or {}
                if held.get("semid.run_id") == self.run_id:
                    break
                continue  # another run took it over between our create and read: try again
            props = self._props()
            if props is None:
                continue  # released meanwhile
            gone = holder_gone(props, time.time())
            if gone:
                log.warning("taking over the writer lock of %s version %s from %s: %s", self.name, self.version,
                            describe(props), gone)
                self.spark.sql(f"DROP VIEW IF EXISTS {self.qview}")
                continue
            if time.monotonic() >= deadline:
                raise LockError(f"table {self.name}, model version {self.version}: another run is writing it: "
                                f"{describe(props)}; waited {self.wait_s:.0f} s (output.lock_wait_s); one writer per "
                                f"version at a time (the lock is the view {self.view})")
            if not waited:
                log.info("waiting up to %.0f s for %s to finish writing %s version %s", self.wait_s, describe(props),
                         self.name, self.version)
                waited = True
            time.sleep(POLL_S)
        self._thread = threading.Thread(target=self._beat, name="semid-lock-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                props = self._props()
                if props is None or props.get("semid.run_id") != self.run_id:
                    self.lost = f"the writer lock {self.view} was taken by {describe(props or {})}"
                    log.error("%s", self.lost)
                    return
                self.spark.sql(f"ALTER VIEW {self.qview} SET TBLPROPERTIES "
                               f"('semid.heartbeat' = {lit(f'{time.time():.0f}')})")
            except Exception as e:  # a metastore hiccup: the next beat tries again; staleness takes a minute
                log.warning("writer lock heartbeat failed: %s", str(e).splitlines()[0] if str(e) else e)

    def check(self) -> None:
        """Raise if the lock was lost (called right before the commit)."""
        props = self._props()
        if self.lost or props is None or props.get("semid.run_id") != self.run_id:
            raise LockError(self.lost or f"table {self.name}, model version {self.version}: the writer lock was "
                            f"taken by {describe(props or {})} while this run ({self.run_id}) ran; not committing")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(HEARTBEAT_S)  # a beat stuck in the metastore is left behind (a daemon thread)
        props = self._props()
        if props is not None and props.get("semid.run_id") == self.run_id:
            self.spark.sql(f"DROP VIEW IF EXISTS {self.qview}")

    def __enter__(self) -> "VersionLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def derby_holder(database: Path) -> str | None:
    """Who has the embedded Derby database ``database`` open, or None. A JVM that opens it
    holds an exclusive lock on its ``dbex.lck`` (fcntl on Linux, as Java's FileChannel.lock
    is): probing that lock tells, and ``/proc/locks`` names the process."""
    lock_file = database / "dbex.lck"
    try:
        fd = os.open(lock_file, os.O_RDWR)
    except OSError:
        return None  # no database yet, or nothing to probe
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return None
    except OSError:
        return _lock_owner(os.fstat(fd).st_ino) or "a process that holds its lock file"
    finally:
        os.close(fd)


def _lock_owner(inode: int) -> str | None:
    """``pid N (command)`` of the process holding a lock on the file with ``inode``."""
    try:
        with open("/proc/locks") as f:
            for line in f:
                parts = line.split()
                fields = parts[5].split(":") if len(parts) > 5 else []
                if len(fields) == 3 and fields[2] == str(inode) and parts[4].isdigit():
                    pid = parts[4]
                    with open(f"/proc/{pid}/cmdline", "rb") as c:
                        cmd = c.read().replace(b"\0", b" ").decode(errors="replace").strip()
                    return f"pid {pid}: {cmd[:160]}"
    except OSError:
        return None
    return None


class WarehouseLock:
    """An exclusive OS lock on ``<warehouse>/.semid.lock`` for the life of this process's run."""

    def __init__(self, warehouse: str, run_id: str, wait_s: float):
        self.path = Path(warehouse_path(warehouse)) / ".semid.lock"
        self.run_id, self.wait_s = run_id, wait_s
        self._f: Any = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
        deadline = time.monotonic() + self.wait_s
        waited = False
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    f.seek(0)
                    holder = f.read().strip() or "{}"
                    f.close()
                    try:
                        who = describe(json.loads(holder))
                    except ValueError:
                        who = holder
                    raise LockError(f"warehouse {self.path.parent} is in use by another process: {who}; its "
                                    f"embedded metastore admits one process at a time; waited {self.wait_s:.0f} s "
                                    "(output.lock_wait_s)") from None
                if not waited:
                    log.info("waiting up to %.0f s for another process using the warehouse %s", self.wait_s,
                             self.path.parent)
                    waited = True
                time.sleep(POLL_S)
        f.seek(0)
        f.truncate()
        f.write(json.dumps(me(self.run_id)))
        f.flush()
        self._f = f
        other = derby_holder(self.path.parent / "metastore_db")
        if other:
            self.release()
            raise LockError(f"warehouse {self.path.parent}: its embedded metastore is open in another process "
                            f"({other}), which is not a semid run; the embedded metastore admits one process at a "
                            "time: stop that process (a notebook, spark-shell or Spark application using this "
                            "warehouse) and run again")

    def release(self) -> None:
        if self._f is not None:
            self._f.close()  # closing frees the lock
            self._f = None

    def __enter__(self) -> "WarehouseLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
