"""Failures of the console scripts exit non-zero with one line. (The job file under spark-submit
is compared with the library in test_packaging.py, with the packed environment.)"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


from .conftest import ROOT

BIN = Path(sys.executable).parent


def run(cmd, **kw):
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable)
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=kw.pop("cwd", ROOT), timeout=600, **kw)
    return p


def test_failures_exit_non_zero_with_one_line(tmp_path):
    p = run([str(BIN / "semid-assign"), "--input", str(tmp_path), "--checkpoint", str(tmp_path / "nope"),
             "--table", "x.y"])
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1].startswith("semid-assign: error: checkpoint")
    p = run([str(BIN / "semid-assign"), "--input", "a", "--checkpoint", "b", "--table", "x.y", "--set", "model.nope=1"])
    assert p.returncode == 2 and "unknown key model.nope; valid keys:" in p.stderr
