"""A real Spark standalone cluster on 127.0.0.1 (master + two workers, from pyspark's own
scripts): the assign job under spark-submit gives the same table as local mode, also when a
worker is killed mid-job, with its plugin model's module reaching the executors through
--py-files alone (the recipe of examples/byo_rqvae for a model trained elsewhere; that the
imported model's codes are its own is shown in local mode and on Spark Connect by
tests/test_import_e2e.py)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import ROOT, clustered
from semid_udf.table.publish import run_assign

from .spark_helpers import config, published_files, write_input

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spark_bin(name: str) -> str:
    import pyspark

    return str(Path(pyspark.__file__).parent / "bin" / name)


def env(**extra):
    return dict(os.environ, PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1", **extra)


pytestmark = pytest.mark.xdist_group("cluster")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("cluster")
    port, ui = free_port(), free_port()
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = []

    def start(args, log):
        p = subprocess.Popen([spark_bin("spark-class"), *args], env=env(), stdout=open(logs / log, "w"),
                             stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(p)
        return p

    start(["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
           "--webui-port", str(ui)], "master.log")
    workers = [start(["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", "1", "--memory", "2g",
                      "--webui-port", str(free_port()), "--work-dir", str(tmp_path / f"w{i}"),
                      f"spark://127.0.0.1:{port}"], f"worker{i}.log") for i in range(2)]
    deadline = time.time() + 120
    alive = 0
    while time.time() < deadline:
        try:
            state = json.load(urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=2))
            alive = state.get("aliveworkers", 0)
            if alive == 2:
                break
        except OSError:
            pass
        time.sleep(0.5)
    assert alive == 2, (logs / "master.log").read_text()[-2000:]
    yield f"spark://127.0.0.1:{port}", workers
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def test_standalone_cluster_with_a_killed_worker_matches_local_mode(cluster, spark, tiny_blob, tiny_checkpoint,
                                                                    tmp_path):
    master, workers = cluster
    x = clustered(2000, 16, seed=61)
    inp = write_input(tmp_path / "in", list(range(2000)), [list(map(float, v)) for v in x], files=4)
    args = ["jobs/assign_semantic_ids.py", "--input", str(inp), "--checkpoint", str(tiny_checkpoint),
            "--table", "clu.ids", "--set", "encode.micro_batch=64", "--set", "output.arrow_batch=64"]
    import tempfile

    from .faults import MARKER

    marker = Path(tempfile.gettempdir()) / MARKER
    marker.unlink(missing_ok=True)
    job_env = env()
    job_env.pop("PYTHONPATH", None)  # the plugin's module (faults) reaches the executors through --py-files alone
    job = subprocess.Popen(
        [spark_bin("spark-submit"), "--master", master, "--conf", "spark.executor.memory=1g",
         "--conf", "spark.sql.shuffle.partitions=4",
         "--py-files", str(ROOT / "tests" / "faults.py"),
         *args, "--warehouse", str(tmp_path / "wh_cluster"),
         "--set", "plugin.factory=faults:slow", "--set", "plugin.layout=batch_major"],
        cwd=ROOT, env=job_env, stdout=open(tmp_path / "job.out", "w"), stderr=open(tmp_path / "job.err", "w"))
    # (files, not pipes: a driver logging into a pipe nobody reads blocks once the pipe is full)
    deadline = time.time() + 900
    while not marker.exists() and job.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert marker.exists(), (tmp_path / "job.err").read_text()[-3000:]
    time.sleep(1.0)
    os.killpg(workers[0].pid, signal.SIGKILL)  # the worker and its executor, mid-job
    job.wait(timeout=600)
    assert job.returncode == 0, (tmp_path / "job.err").read_text()[-3000:]
    assert "rows in          2000" in (tmp_path / "job.out").read_text()

    # local mode: the library in this process, without the slow plug-in (the same model's codes)
    run_assign(spark, config(output={"arrow_batch": 64}), tiny_blob, table="clulocal.ids", input_path=str(inp),
               warehouse=str(tmp_path / "wh_local"))
    assert published_files(tmp_path / "wh_cluster", "clu.ids") == published_files(tmp_path / "wh_local", "clulocal.ids")
