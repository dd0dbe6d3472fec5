"""Shared fixtures, and the test tiers. Most tests need no Spark; the few that do share one
local[2] session; a few start processes of their own (a CLI run, a Connect server, a cluster).

Every test gets one tier marker, found from what it uses (nothing to keep by hand):

- ``process``: the test, one of its fixtures, or a helper of its module it calls starts a
  process (``subprocess``, ``Popen``): the slowest tier;
- ``spark``: it uses the shared ``spark`` session (directly or through its fixtures);
- ``unit``: neither: no JVM at all.

``make quick`` runs ``unit`` and ``spark``; ``make test`` (CI) runs everything.
"""
from __future__ import annotations

import functools
import inspect
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]


def clustered(n: int, dim: int, seed: int = 0, centers: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, dim)).astype(np.float32)
    return (c[rng.integers(0, centers, n)] + 0.3 * rng.normal(size=(n, dim))).astype(np.float32)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A small trained model: 16-d input, 3 levels x 16 codes."""
    from semid_udf.model.checkpoint import save_checkpoint
    from semid_udf.config import ModelConfig, TrainConfig
    from semid_udf.model.train import fit

    x = clustered(3000, 16, seed=1)
    model, meta = fit(x, ModelConfig(hidden_dims=(32,), latent_dim=8, levels=3, codebook_size=16),
                      TrainConfig(epochs=3, batch_size=256, kmeans_iters=5, seed=3))
    d = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_checkpoint(model, model.cfg, d, training=meta)
    return d


@pytest.fixture(scope="session")
def tiny_blob(tiny_checkpoint):
    from semid_udf.model.checkpoint import read_checkpoint

    return read_checkpoint(tiny_checkpoint)


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    """The one SparkSession of the test run: local[2] with 3 attempts per task, UI off."""
    from pyspark.sql import SparkSession

    from semid_udf.spark.session import prepare_session

    base = tmp_path_factory.mktemp("spark")
    wh = base / "warehouse"
    session = (
        SparkSession.builder.master("local[2,3]")
        .appName("semid-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.default.parallelism", "2")
        .config("spark.sql.warehouse.dir", str(wh))
        .config("spark.hadoop.javax.jdo.option.ConnectionURL", f"jdbc:derby:;databaseName={base}/metastore_db;create=true")
        .config("spark.driver.extraJavaOptions", f"-Dderby.system.home={base} -Dderby.system.durability=test")
        .enableHiveSupport()
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    prepare_session(session)
    yield session
    session.stop()


def tampered_copy(checkpoint: Path, dest: Path) -> Path:
    """A copy of ``checkpoint`` whose weights file has its last byte flipped."""
    import shutil

    shutil.copytree(checkpoint, dest)
    data = bytearray((dest / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (dest / "model.safetensors").write_bytes(bytes(data))
    return dest


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def connect_url(tmp_path_factory):
    """A Spark Connect server in a process of its own (local[2], 3 attempts per task, Hive
    catalog on an embedded Derby), as Databricks serverless or a cluster offers one: the
    tests talk to it as clients, with no JVM or SparkContext of their own."""
    import subprocess
    import time

    import pyspark

    base = tmp_path_factory.mktemp("connect")
    port = free_port()
    conf = {
        "spark.connect.grpc.binding.port": str(port),
        "spark.ui.enabled": "false",
        "spark.sql.catalogImplementation": "hive",
        "spark.sql.warehouse.dir": str(base / "warehouse"),
        "spark.hadoop.javax.jdo.option.ConnectionURL": f"jdbc:derby:;databaseName={base}/metastore_db;create=true",
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={base}",
        "spark.sql.shuffle.partitions": "4",
        "spark.python.daemon.module": "semid_udf.daemon",
        "spark.connect.progress.reportInterval": "200ms",  # progress updates often enough for a short test run
    }
    cmd = [str(Path(pyspark.__file__).parent / "bin" / "spark-submit"), "--master", "local[2,3]",
           "--class", "org.apache.spark.sql.connect.service.SparkConnectServer"]
    for k, v in conf.items():
        cmd += ["--conf", f"{k}={v}"]
    log = open(base / "server.log", "w")
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable)
    env.pop("SPARK_REMOTE", None)
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"sc://localhost:{port}"
    deadline = time.time() + 180
    import socket

    while time.time() < deadline:
        if p.poll() is not None:
            raise RuntimeError("the Spark Connect server exited: " + (base / "server.log").read_text()[-3000:])
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.5)
    else:
        raise RuntimeError("the Spark Connect server did not start: " + (base / "server.log").read_text()[-3000:])
    yield url
    import signal

    os.killpg(p.pid, signal.SIGTERM)
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


_STARTS = re.compile(r"\bsubprocess\.|\bPopen\(")


@functools.lru_cache(maxsize=None)
def _process_helpers(module) -> frozenset[str]:
    """Functions of a test module whose own code starts a process."""
    out = set()
    for name, f in vars(module).items():
        if inspect.isfunction(f) and f.__module__ == module.__name__:
            try:
                if _STARTS.search(inspect.getsource(f)):
                    out.add(name)
            except (OSError, TypeError):
                continue
    return frozenset(out)


def _starts_processes(func) -> bool:
    try:
        src = inspect.getsource(func)
    except (OSError, TypeError):
        return False
    module = sys.modules.get(func.__module__)
    helpers = _process_helpers(module) if module is not None else frozenset()
    return bool(_STARTS.search(src)) or any(re.search(rf"(?<![\w.]){h}\(", src) for h in helpers)


def pytest_collection_modifyitems(config, items):
    for item in items:
        funcs = [item.function]
        for name in item.fixturenames:
            for d in (item._fixtureinfo.name2fixturedefs.get(name) or ()):
                funcs.append(d.func)
        if any(_starts_processes(f) for f in funcs):
            item.add_marker(pytest.mark.process)
        elif "spark" in item.fixturenames:
            item.add_marker(pytest.mark.spark)
        else:
            item.add_marker(pytest.mark.unit)
        # `make test` runs two pytest-xdist workers (--dist loadgroup): the tests of the shared
        # session stay on one worker (one JVM for all of them), the Connect clients on one server;
        # the tests that start processes of their own (mostly waiting on them) fill both workers.
        if "connect_url" in item.fixturenames:
            item.add_marker(pytest.mark.xdist_group("connect"))
        elif "spark" in item.fixturenames and not item.get_closest_marker("process"):
            item.add_marker(pytest.mark.xdist_group("spark"))
    # The order the workers take them in (a stable sort: a module's tests of one tier stay
    # together): the groups first (each a long unit of work for one worker), then the other
    # tests that start processes, then the tests with no JVM, which are short and fill the
    # workers' last minutes instead of one worker finishing a long test alone.
    items.sort(key=lambda it: 0 if it.get_closest_marker("xdist_group") else
               1 if it.get_closest_marker("process") else 2)
