"""semid-assign --stream: micro-batches of new files, killed and restarted in the middle,
end with the table one append run over the same items gives; one writer per version."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from semid_udf.errors import LockError
from semid_udf.publish import run_assign
from semid_udf.stream import run_stream

from .conftest import ROOT, clustered
from .spark_helpers import config, published_files, write_input

pytestmark = pytest.mark.spark
BIN = Path(sys.executable).parent


def assign(args, tmp_path, tag, **env_extra):
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, **env_extra)
    env.pop("SPARK_REMOTE", None)
    err = tmp_path / f"{tag}.err"
    p = subprocess.Popen([str(BIN / "semid-assign"), *args], cwd=ROOT, env=env, stdout=open(tmp_path / f"{tag}.out", "w"),
                         stderr=open(err, "w"), start_new_session=True)
    p.err_path = err  # type: ignore[attr-defined]
    return p


def done(p) -> str:
    assert p.wait(timeout=600) == 0, p.err_path.read_text()[-3000:]
    return p.err_path.read_text()


def test_a_killed_and_restarted_stream_equals_one_append_run(spark, tiny_blob, tiny_checkpoint, tmp_path):
    x = clustered(250, 16, seed=111)
    vec = [list(map(float, v)) for v in x]
    day0 = write_input(tmp_path / "day0", list(range(100)), vec[:100], files=1)
    arriving = tmp_path / "arriving"
    # three files arrive: new items, plus item 5 again with another embedding (its ID never moves)
    for k, (lo, hi) in enumerate([(100, 150), (150, 200), (200, 250)]):
        ids, vs = list(range(lo, hi)), vec[lo:hi]
        if k == 1:
            ids, vs = ids + [5], vs + [[v + 1.0 for v in vec[5]]]
        write_input(arriving / f"f{k}", ids, vs, files=1)
        (arriving / f"f{k}" / "part-0.parquet").rename(arriving / f"batch-{k}.parquet")
        (arriving / f"f{k}").rmdir()
    common = ["--checkpoint", str(tiny_checkpoint), "--table", "st.ids", "--set", "encode.micro_batch=64"]

    wh = tmp_path / "wh"
    done(assign(["--input", str(day0), *common, "--warehouse", str(wh)], tmp_path, "day0"))
    stream = ["--stream", "--input", str(arriving), "--stream-checkpoint", str(tmp_path / "sc"), *common,
              "--warehouse", str(wh), "--set", "input.files_per_trigger=1"]
    first = assign(stream, tmp_path, "stream1", SEMID_FAILPOINT="committed micro-batch 1")
    deadline = time.time() + 600
    while "failpoint: paused at committed micro-batch 1" not in first.err_path.read_text():
        assert first.poll() is None and time.time() < deadline, first.err_path.read_text()[-3000:]
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGKILL)  # after batch 1's commit, before Spark recorded batch 1 as done
    first.wait()
    err = done(assign(stream, tmp_path, "stream2"))
    assert "micro-batch 1 of stream" in err and "is already committed" in err  # replayed, and changed nothing

    ref = tmp_path / "ref"  # one full run of day 0, then one append run over the three files
    cfg = config(encode={"micro_batch": 64})
    run_assign(spark, cfg, tiny_blob, table="stref.ids", input_path=str(day0), warehouse=str(ref))
    run_assign(spark, cfg, tiny_blob, table="stref.ids", input_path=str(arriving), warehouse=str(ref), mode="append")
    got, expected = published_files(wh, "st.ids"), published_files(ref, "stref.ids")
    assert got["item_id"] == list(range(250)) and got == expected

    # the contract's export command on the streamed table: tokens of every item
    out = tmp_path / "export"
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable)
    env.pop("SPARK_REMOTE", None)
    r = subprocess.run([str(BIN / "semid-export"), "--table", "st.ids", "--warehouse", str(wh), "--out", str(out)],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "items 250" in r.stdout and (out / "manifest.json").exists()


def test_one_writer_per_version_while_a_stream_runs(spark, tiny_blob, tmp_path):
    x = clustered(120, 16, seed=112)
    wh = str(tmp_path / "wh")
    day0 = write_input(tmp_path / "day0", list(range(60)), [list(map(float, v)) for v in x[:60]], files=1)
    run_assign(spark, config(), tiny_blob, table="sw.ids", input_path=str(day0), warehouse=wh)
    arriving = write_input(tmp_path / "arriving", list(range(60, 120)), [list(map(float, v)) for v in x[60:]])
    errors: list[BaseException] = []

    def run() -> None:
        try:
            run_stream(spark, config(), tiny_blob, table="sw.ids", checkpoint_location=str(tmp_path / "sc"),
                       input_path=str(arriving), warehouse=wh, trigger="2 seconds")
        except BaseException as e:  # handed to the test below
            errors.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    deadline = time.time() + 300
    while spark.table("sw.ids").count() < 120:
        assert time.time() < deadline and not errors, errors
        time.sleep(0.5)
    try:
        with pytest.raises(LockError, match=r"another run is writing it: run stream-"):
            run_assign(spark, config(output={"lock_wait_s": 2}), tiny_blob, table="sw.ids", input_path=str(day0),
                       warehouse=wh, mode="append")
    finally:
        for q in spark.streams.active:
            q.stop()
        t.join(timeout=120)
    assert not errors, errors
    again = run_assign(spark, config(output={"lock_wait_s": 2}), tiny_blob, table="sw.ids", input_path=str(day0),
                       warehouse=wh, mode="append")  # the stream has ended: the lock is free
    assert again.rows_new == 0 and again.rows_out == 120
