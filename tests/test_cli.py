"""spark-submit gives the library's table; failures exit with one line."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


from .conftest import ROOT, clustered
from .spark_helpers import published_files, write_input

BIN = Path(sys.executable).parent


def run(cmd, **kw):
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable)
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=kw.pop("cwd", ROOT), timeout=600, **kw)
    return p


def test_spark_submit_gives_the_librarys_table(spark, tiny_blob, tiny_checkpoint, tmp_path):
    """jobs/assign_semantic_ids.py under spark-submit publishes what run_assign publishes in this
    process (other batch sizes: the IDs do not depend on them). (The console script's classic runs
    are compared with Spark Connect's in test_connect.py; a new process reads a table through its
    views in test_publish.py.)"""
    from semid_udf.table.publish import run_assign

    from .spark_helpers import config

    x = clustered(300, 16, seed=31)
    inp = write_input(tmp_path / "in", list(range(300)), [list(map(float, v)) for v in x])
    run_assign(spark, config(), tiny_blob, table="clilib.sids", input_path=str(inp), warehouse=str(tmp_path / "wh1"))
    args = ["--input", str(inp), "--checkpoint", str(tiny_checkpoint), "--table", "cli.sids"]
    submit = shutil.which("spark-submit", path=str(BIN)) or "spark-submit"
    b = run([submit, "--master", "local[2]", "jobs/assign_semantic_ids.py", *args, "--warehouse", str(tmp_path / "wh2")])
    assert b.returncode == 0, b.stderr[-3000:]
    assert "rows in          300" in b.stdout
    assert "semid_metastore, which has not been configured" not in b.stderr  # its pool is defined
    assert published_files(tmp_path / "wh2", "cli.sids") == published_files(tmp_path / "wh1", "clilib.sids")


def test_failures_exit_non_zero_with_one_line(tmp_path):
    p = run([str(BIN / "semid-assign"), "--input", str(tmp_path), "--checkpoint", str(tmp_path / "nope"),
             "--table", "x.y"])
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1].startswith("semid-assign: error: checkpoint")
    p = run([str(BIN / "semid-assign"), "--input", "a", "--checkpoint", "b", "--table", "x.y", "--set", "model.nope=1"])
    assert p.returncode == 2 and "unknown key model.nope; valid keys:" in p.stderr
