"""semid-assign --stream: micro-batches of new files, killed and restarted in the middle,
end with the table one append run over the same items gives; one writer per version."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from semid_udf.errors import InputError, LockError
from semid_udf.table.publish import run_assign
from semid_udf.table.stream import run_stream

from .conftest import ROOT, clustered
from .spark_helpers import config, failpoint, published_files, write_input

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
    """The stream's first file starts the version (a full run), the next ones append; killed
    right after a micro-batch's commit (before Spark recorded the batch as done), the restart
    replays that batch and changes nothing."""
    x = clustered(200, 16, seed=111)
    vec = [list(map(float, v)) for v in x]
    arriving = tmp_path / "arriving"
    # three files arrive: day 0's items, new items plus item 5 again with another embedding (its ID
    # never moves), new items
    for k, (lo, hi) in enumerate([(0, 100), (100, 150), (150, 200)]):
        ids, vs = list(range(lo, hi)), vec[lo:hi]
        if k == 1:
            ids, vs = ids + [5], vs + [[v + 1.0 for v in vec[5]]]
        write_input(arriving / f"f{k}", ids, vs, files=1)
        (arriving / f"f{k}" / "part-0.parquet").rename(arriving / f"batch-{k}.parquet")
        (arriving / f"f{k}").rmdir()
        # they arrive in this order: the file source orders by modification time, and files
        # written within one millisecond would otherwise come in the folder's listing order
        os.utime(arriving / f"batch-{k}.parquet", (time.time() - 100 + k, time.time() - 100 + k))
    common = ["--checkpoint", str(tiny_checkpoint), "--table", "st.ids", "--set", "encode.micro_batch=64"]

    wh = tmp_path / "wh"
    stream = ["--stream", "--input", str(arriving), "--stream-checkpoint", str(tmp_path / "sc"), *common,
              "--warehouse", str(wh), "--set", "input.files_per_trigger=1"]
    first = assign(stream, tmp_path, "stream1", **failpoint("committed micro-batch 1"))
    deadline = time.time() + 600
    while "failpoint: paused at committed micro-batch 1" not in first.err_path.read_text():
        assert first.poll() is None and time.time() < deadline, first.err_path.read_text()[-3000:]
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGKILL)  # after batch 1's commit, before Spark recorded batch 1 as done
    first.wait()
    err = done(assign(stream, tmp_path, "stream2"))
    assert "micro-batch 1 of stream" in err and "is already committed" in err  # replayed, and changed nothing

    ref = tmp_path / "ref"  # one full run of day 0, then one append run over the other two files
    cfg = config(encode={"micro_batch": 64})
    day0 = write_input(tmp_path / "day0", list(range(100)), vec[:100], files=1)
    rest = tmp_path / "rest"
    rest.mkdir()
    for k in (1, 2):
        (rest / f"batch-{k}.parquet").write_bytes((arriving / f"batch-{k}.parquet").read_bytes())
    run_assign(spark, cfg, tiny_blob, table="stref.ids", input_path=str(day0), warehouse=str(ref))
    run_assign(spark, cfg, tiny_blob, table="stref.ids", input_path=str(rest), warehouse=str(ref), mode="append")
    got, expected = published_files(wh, "st.ids"), published_files(ref, "stref.ids")
    assert got["item_id"] == list(range(200)) and got == expected


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


def arrive(folder: Path, name: str, ids, vectors, files: int = 2) -> None:
    """Files that arrive in a streamed folder (directly in it, named after ``name``)."""
    staging = write_input(folder.parent / f"_{name}", ids, vectors, files=files)
    folder.mkdir(parents=True, exist_ok=True)
    for f in sorted(staging.iterdir()):
        f.rename(folder / f"{name}-{f.name}")
    staging.rmdir()


def test_a_reset_stream_checkpoint_gives_new_items_their_ids(spark, tiny_blob, tmp_path):
    """The checkpoint folder deleted and the stream restarted with the same path: Spark numbers
    its micro-batches from 0 again, and none of the new items may be skipped as committed."""
    import shutil

    x = clustered(300, 16, seed=113)
    vec = [list(map(float, v)) for v in x]
    wh, sc, arriving = str(tmp_path / "wh"), str(tmp_path / "sc"), tmp_path / "arriving"
    arrive(arriving, "a", list(range(100)), vec[:100])
    first = run_stream(spark, config(), tiny_blob, table="rs.ids", checkpoint_location=sc,
                       input_path=str(arriving), warehouse=wh)
    assert sum(r.rows_new for r in first) == 100
    shutil.rmtree(sc)  # the reset
    arrive(arriving, "b", list(range(100, 300)), vec[100:])
    again = run_stream(spark, config(), tiny_blob, table="rs.ids", checkpoint_location=sc,
                       input_path=str(arriving), warehouse=wh)
    assert sum(r.rows_new for r in again) == 200  # every new item, none twice
    assert published_files(tmp_path / "wh", "rs.ids")["item_id"] == list(range(300))
    assert sorted(r.item_id for r in spark.table("rs.ids").select("item_id").collect()) == list(range(300))


def test_an_unreadable_file_in_a_streamed_folder_is_named_then_removed_or_quarantined(spark, tiny_blob, tmp_path,
                                                                                      caplog):
    """A foreign file in the folder stops the stream with one line naming it, and nothing is
    published; deleted, the restart publishes the rest; with input.quarantine the next one is
    moved aside and the stream goes on without it. (The CLI prints that line after
    "semid-assign: error:" and exits 2, as for every semid error: tests/test_cli.py.)"""
    import pyarrow.parquet as pq

    x = clustered(150, 16, seed=114)
    vec = [list(map(float, v)) for v in x]
    arriving, wh, sc = tmp_path / "arriving", tmp_path / "wh", tmp_path / "sc"
    arrive(arriving, "a", list(range(50)), vec[:50], files=1)
    (arriving / "not-parquet.parquet").write_bytes(b"PAR1 these bytes are not a Parquet file PAR1")

    def stream(cfg):
        return run_stream(spark, cfg, tiny_blob, table="bad.ids", checkpoint_location=str(sc), input_path=str(arriving),
                          warehouse=str(wh))

    with pytest.raises(InputError) as e:
        stream(config(encode={"micro_batch": 64}))
    line = str(e.value)
    assert "\n" not in line and line.startswith("micro-batch 0: cannot read the input file ") and "not-parquet" in line
    assert "nothing was published for this micro-batch" in line and "input.quarantine" in line
    manifest = wh / "bad.db" / "ids_manifest"
    statuses = [r["status"] for f in manifest.glob("*.parquet") for r in pq.read_table(f).to_pylist()]
    assert "complete" not in statuses

    (arriving / "not-parquet.parquet").unlink()  # what the message says to do
    stream(config(encode={"micro_batch": 64}))
    assert published_files(wh, "bad.ids")["item_id"] == list(range(50))

    arrive(arriving, "b", list(range(50, 150)), vec[50:])
    (arriving / "foreign.parquet").write_bytes(b"\x00" * 64)
    q = tmp_path / "quarantine"
    with caplog.at_level(logging.WARNING, logger="semid_udf"):
        stream(config(encode={"micro_batch": 64}, input={"quarantine": str(q)}))
    assert any("moved the unreadable input file" in r.getMessage() and "foreign.parquet" in r.getMessage()
               for r in caplog.records)
    assert [f.name.split("-", 1)[1] for f in q.iterdir()] == ["foreign.parquet"]
    assert not (arriving / "foreign.parquet").exists()
    assert published_files(wh, "bad.ids")["item_id"] == list(range(150))
