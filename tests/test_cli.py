"""The console script and spark-submit give the same table; a new process finds the rows."""
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


def test_console_script_and_spark_submit_agree(tiny_checkpoint, tmp_path):
    x = clustered(300, 16, seed=31)
    inp = write_input(tmp_path / "in", list(range(300)), [list(map(float, v)) for v in x])
    args = ["--input", str(inp), "--checkpoint", str(tiny_checkpoint), "--table", "cli.sids"]
    a = run([str(BIN / "semid-assign"), *args, "--warehouse", str(tmp_path / "wh1")])
    assert a.returncode == 0, a.stderr[-3000:]
    assert "rows in          300" in a.stdout
    assert "semid_metastore, which has not been configured" not in a.stderr  # its pool is defined
    submit = shutil.which("spark-submit", path=str(BIN)) or "spark-submit"
    b = run([submit, "--master", "local[2]", "jobs/assign_semantic_ids.py", *args, "--warehouse", str(tmp_path / "wh2")])
    assert b.returncode == 0, b.stderr[-3000:]
    assert published_files(tmp_path / "wh1", "cli.sids") == published_files(tmp_path / "wh2", "cli.sids")

    lookup = (
        "import sys; from semid_udf.spark.session import build_session; "
        f"s = build_session('lookup', {{}}, {str(tmp_path / 'wh1')!r}); "
        "r = s.sql('SELECT semantic_id FROM cli.sids WHERE item_id = 123').collect(); "
        "sys.stdout.write('FOUND ' + ','.join(x.semantic_id for x in r) + chr(10))"
    )
    c = run([sys.executable, "-c", lookup], cwd=tmp_path)
    assert c.returncode == 0, c.stderr[-3000:]
    expected = published_files(tmp_path / "wh1", "cli.sids")
    sid = expected["semantic_id"][expected["item_id"].index(123)]
    assert f"FOUND {sid}\n" in c.stdout


def test_failures_exit_non_zero_with_one_line(tmp_path):
    p = run([str(BIN / "semid-assign"), "--input", str(tmp_path), "--checkpoint", str(tmp_path / "nope"),
             "--table", "x.y"])
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1].startswith("semid-assign: error: checkpoint")
    p = run([str(BIN / "semid-assign"), "--input", "a", "--checkpoint", "b", "--table", "x.y", "--set", "model.nope=1"])
    assert p.returncode == 2 and "unknown key model.nope; valid keys:" in p.stderr
