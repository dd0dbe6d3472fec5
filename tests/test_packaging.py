"""The wheel installed in a fresh venv, and the spark-submit recipe with the packed environment.

Both use ``scripts/pack_env.sh``: it builds the wheel, installs it into a fresh venv and
packs that venv with venv-pack. By default the venv gets only the wheel and reaches the
heavy dependencies (torch, pyspark, ...) of this test's own venv through an import line
in a .pth file (``--link-deps``), which takes seconds; a full install from the package
index (measured ~70 s install, several minutes in all with packing) runs with
SEMID_TEST_FULL_ENV=1. Either way the source tree is never on the path: the commands run
from a directory outside the repository with PYTHONPATH unset.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

import pytest

from .conftest import ROOT, clustered
from .spark_helpers import published_files, write_input

FULL = os.environ.get("SEMID_TEST_FULL_ENV") == "1"
ROWS = 300


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "VIRTUAL_ENV")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    cmd = ["bash", str(ROOT / "scripts" / "pack_env.sh"), "--python", sys.executable, "--out", str(out)]
    # Full: keep pyspark, so that the venv also runs semid-assign without spark-submit.
    cmd += ["--with-pyspark"] if FULL else ["--link-deps", sysconfig.get_path("purelib")]
    p = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), cwd=out, timeout=1200)
    assert p.returncode == 0, p.stderr[-3000:]
    assert Path(p.stdout.strip().splitlines()[-1]) == out / "semid-env.tar.gz"
    return out


@pytest.fixture(scope="module")
def small_input(tmp_path_factory) -> Path:
    x = clustered(ROWS, 16, seed=41)
    return write_input(tmp_path_factory.mktemp("input") / "emb", list(range(ROWS)), [list(map(float, v)) for v in x])


def output_rows(warehouse: Path, db: str, name: str) -> dict:
    return published_files(warehouse, f"{db}.{name}")


def test_wheel_in_a_fresh_venv_gives_the_console_scripts(packed, tmp_path):
    """The venv's semid_udf and console scripts are the wheel's, not the source tree's. The job
    itself runs from this venv in the spark-submit test below (its Python is the driver's)."""
    venv = packed / "semid-env"
    py = venv / "bin" / "python"
    probe = ("import sys, semid_udf.cli.assign_semantic_ids, semid_udf.worker.arrow; "
             "print(semid_udf.worker.arrow.__file__); print(semid_udf.cli.assign_semantic_ids.__file__); "
             "print('\\n'.join(sys.path))")
    p = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, env=clean_env(), cwd=tmp_path,
                       timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    udf_file, job_file, *path = p.stdout.splitlines()
    assert Path(udf_file).resolve().is_relative_to(venv.resolve())
    assert Path(job_file).resolve().is_relative_to(venv.resolve())
    assert not any(e and Path(e).resolve() == ROOT for e in path), "the source tree is on sys.path"
    for script in ("semid-assign", "semid-train", "semid-import", "semid-export", "semid-report", "semid-demo"):
        h = subprocess.run([str(venv / "bin" / script), "--help"], capture_output=True, text=True,
                           env=clean_env(PYSPARK_PYTHON=str(py)), cwd=tmp_path, timeout=120)
        assert h.returncode == 0 and h.stdout.startswith(f"usage: {script}"), (script, h.stderr[-2000:])


def test_spark_submit_recipe_with_the_packed_environment(packed, small_input, tiny_checkpoint, spark, tiny_blob,
                                                         tmp_path):
    """docs/deploy.md, "Running on a cluster with spark-submit", on local[2]: the archive is unpacked
    as ./environment in the launch directory (local mode does not do it; see docs/deploy.md). The
    job file under spark-submit publishes what ``run_assign`` publishes in this process (other
    batch sizes and shuffle partitions: the IDs do not depend on them)."""
    from semid_udf.table.publish import run_assign

    from .spark_helpers import config

    run = tmp_path / "run"
    (run / "environment").mkdir(parents=True)
    with tarfile.open(packed / "semid-env.tar.gz") as t:
        t.extractall(run / "environment", filter="tar")
    # What cluster deploy mode ships: the job file alone, no source tree beside it.
    shutil.copy(ROOT / "jobs" / "assign_semantic_ids.py", run / "assign_semantic_ids.py")
    import pyspark

    spark_home = Path(pyspark.__file__).parent
    wh = tmp_path / "wh"
    cmd = [str(spark_home / "bin" / "spark-submit"), "--master", "local[2]",
           "--archives", f"{packed / 'semid-env.tar.gz'}#environment",
           "--conf", "spark.pyspark.python=./environment/bin/python",
           "--conf", f"spark.pyspark.driver.python={packed / 'semid-env' / 'bin' / 'python'}",
           "--conf", "spark.ui.enabled=false",
           "assign_semantic_ids.py", "--input", str(small_input), "--checkpoint", str(tiny_checkpoint),
           "--table", "sub.sids", "--warehouse", str(wh),
           "--set", "spark.spark.sql.shuffle.partitions=4", "--set", "encode.micro_batch=64"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(SPARK_HOME=str(spark_home)), cwd=run,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"rows in          {ROWS}" in p.stdout
    assert "semid_metastore, which has not been configured" not in p.stderr  # its scheduler pool is defined
    rows = output_rows(wh, "sub", "sids")
    assert rows["item_id"] == list(range(ROWS))
    assert len(set(rows["semantic_id"])) == ROWS
    run_assign(spark, config(), tiny_blob, table="sublib.sids", input_path=str(small_input), warehouse=str(tmp_path / "lib"))
    assert rows == output_rows(tmp_path / "lib", "sublib", "sids")
