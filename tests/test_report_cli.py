"""semid-report end to end: a checkpoint and a Parquet table in, report.json and plots out."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


from .conftest import ROOT, clustered
from .spark_helpers import write_input

BIN = Path(sys.executable).parent


def test_semid_report_writes_json_and_plots(tiny_checkpoint, tmp_path):
    x = clustered(1500, 16, seed=41)
    inp = write_input(tmp_path / "in", list(range(1500)), [list(map(float, v)) for v in x])
    out = tmp_path / "report"
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable)
    p = subprocess.run([str(BIN / "semid-report"), "--checkpoint", str(tiny_checkpoint), "--input", str(inp),
                        "--out", str(out), "--rows", "1000", "--nn-sample", "400",
                        "--set", "spark.spark.ui.enabled=false"],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    rep = json.loads((out / "report.json").read_text())
    assert 900 <= rep["items"] <= 1000  # the bounded sample, by id hash
    assert len(rep["per_level"]) == 3 and rep["coherence"]["sample"] == 400
    assert set(rep["reconstruction"]) == {"latent_mse", "latent_relative", "input_mse", "input_relative"}
    assert (out / "code_usage.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "bucket_sizes.png").read_bytes()[:4] == b"\x89PNG"
    assert "unique before suffix" in p.stdout


def test_semid_report_fails_with_one_line_on_a_missing_checkpoint(tmp_path):
    p = subprocess.run([str(BIN / "semid-report"), "--checkpoint", str(tmp_path / "nope"), "--input", str(tmp_path),
                        "--out", str(tmp_path / "o")], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1].startswith("semid-report: error: checkpoint")
