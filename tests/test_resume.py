"""Driver killed mid-run, then rerun: committed shards are skipped, the table is exact."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.dataset as ds

from semid_udf.table.publish import run_assign

from .conftest import ROOT, clustered
from .spark_helpers import config, published_files, write_input

BIN = Path(sys.executable).parent
SHARDS = 6


def assign(args, wh):
    """Start semid-assign; output goes to files (a pipe nobody reads would block the driver)."""
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable)
    cmd = [str(BIN / "semid-assign"), *args, "--warehouse", str(wh)]
    out, err = open(wh.parent / f"{wh.name}.out", "w"), open(wh.parent / f"{wh.name}.err", "w")
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=err, start_new_session=True)
    p.err_path = wh.parent / f"{wh.name}.err"  # type: ignore[attr-defined]
    return p


def finish(p) -> str:
    p.wait(timeout=600)
    err = p.err_path.read_text()
    assert p.returncode == 0, err[-3000:]
    return err


def test_killed_driver_resumes_from_committed_shards(spark, tiny_blob, tiny_checkpoint, tmp_path):
    x = clustered(600, 16, seed=51)
    inp = write_input(tmp_path / "in", list(range(600)), [list(map(float, v)) for v in x], files=3)
    args = ["--input", str(inp), "--checkpoint", str(tiny_checkpoint), "--table", "res.ids",
            "--set", f"output.shards={SHARDS}"]
    wh = tmp_path / "wh"
    first = assign(args, wh)
    manifest = wh / "res.db" / "ids_manifest"

    def staged() -> list[dict]:
        """The shards the manifest records as committed (its 'staged' rows)."""
        if not manifest.exists():
            return []
        try:
            rows = ds.dataset(manifest, format="parquet").to_table().to_pylist()
        except OSError:  # a file being written: read again
            return []
        return [json.loads(r["details"]) for r in rows if r["status"] == "staged"]

    deadline = time.time() + 300
    while time.time() < deadline and first.poll() is None and not staged():
        time.sleep(0.05)
    assert staged(), "no shard was committed before the run ended: " + first.err_path.read_text()[-3000:]
    os.killpg(first.pid, signal.SIGKILL)  # the driver and its JVM, mid-run
    first.wait()
    done_before = sorted(d["shard"] for d in staged())
    assert 0 < len(done_before) < SHARDS
    staging_root = wh / "res.db" / "ids_data" / "_staging"
    (staging_root / "0000deadbeef0000").mkdir()  # a killed run over another input: reported, not reused

    second = assign(args, wh)
    err = finish(second)
    runs = ds.dataset(manifest, format="parquet").to_table().to_pylist()
    complete = [m for m in runs if m["status"] == "complete"]
    assert len(complete) == 1
    resume = json.loads(complete[0]["details"])["resume"]
    assert resume["skipped"] == done_before  # committed shards were not recomputed
    assert sorted(resume["skipped"] + resume["computed"]) == list(range(SHARDS))
    assert resume["orphans"] == ["0000deadbeef0000"]
    assert not Path(resume["staging"].removeprefix("file:")).exists()  # cleaned after the complete manifest
    assert "0000deadbeef0000" in err

    run_assign(spark, config(), tiny_blob, table="resclean.ids", input_path=str(inp),
               warehouse=str(tmp_path / "wh_clean"))  # one uninterrupted, unsharded run
    assert published_files(wh, "res.ids") == published_files(tmp_path / "wh_clean", "resclean.ids")
