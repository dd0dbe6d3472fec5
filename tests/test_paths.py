"""Refusals that happen before any Spark work: unsafe output paths, a tampered checkpoint."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.assign_semantic_ids import check_paths
from semid_udf.errors import UnsafeSettingError

from .conftest import ROOT, tampered_copy


@pytest.mark.parametrize("inp, ck, wh, table", [
    ("{t}/wh/db.db/t_data", "{t}/ck", "{t}/wh", "db.t"),     # output is the input
    ("{t}/wh/db.db/t_data/part", "{t}/ck", "{t}/wh", "db.t"),  # input inside the output
    ("{t}/wh/db.db/t_manifest", "{t}/ck", "{t}/wh", "db.t"),  # another of the table's folders
    ("{t}/wh", "{t}/ck", "{t}/wh", "db.t"),                  # output inside the input
    ("{t}/in", "{t}/wh", "{t}/wh", "db.t"),                  # output inside the checkpoint
])
def test_unsafe_output_locations_are_refused(tmp_path, inp, ck, wh, table):
    with pytest.raises(UnsafeSettingError, match="refusing to write"):
        check_paths(inp.format(t=tmp_path), ck.format(t=tmp_path), wh.format(t=tmp_path), table)


def test_safe_locations_pass(tmp_path):
    check_paths(str(tmp_path / "in"), str(tmp_path / "ck"), str(tmp_path / "wh"), "db.t")
    check_paths(str(tmp_path / "wh" / "db.db" / "other"), str(tmp_path / "ck"), str(tmp_path / "wh"), "db.t")


def test_tampered_checkpoint_stops_the_job_before_spark(tiny_checkpoint, tmp_path):
    ck = tampered_copy(tiny_checkpoint, tmp_path / "ck")
    p = subprocess.run([str(Path(sys.executable).parent / "semid-assign"), "--input", str(tmp_path / "in"),
                        "--checkpoint", str(ck), "--table", "db.t", "--warehouse", str(tmp_path / "wh")],
                       capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYSPARK_PYTHON=sys.executable),
                       timeout=120)
    assert p.returncode == 2
    assert "sha256 expected" in p.stderr.strip().splitlines()[-1]
    assert "log4j" not in p.stderr and not (tmp_path / "wh").exists()  # no JVM started, nothing written
