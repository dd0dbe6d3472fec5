"""The jobs on Spark Connect (a server in another process, or a local one in the job's own)
give what they give on a classic session: the same table, rejects and counts, the same
checkpoint, the same report; and the encode reports its progress on both."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from .conftest import ROOT, clustered
from .spark_helpers import published_files, write_input

BIN = Path(sys.executable).parent


def job(name: str, args: list[str], remote: str | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable)
    env.pop("SPARK_REMOTE", None)
    if remote:
        env["SPARK_REMOTE"] = remote
    r = subprocess.run([str(BIN / name), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    return r


def rejects(wh: Path, table: str) -> list[tuple]:
    db, name = table.split(".")
    t = ds.dataset(wh / f"{db}.db" / f"{name}_rejects", format="parquet", partitioning="hive").to_table()
    return sorted(zip(t.column("item_id").to_pylist(), t.column("reason").to_pylist(), t.column("detail").to_pylist()))


def complete_run(wh: Path, table: str) -> dict:
    db, name = table.split(".")
    rows = ds.dataset(wh / f"{db}.db" / f"{name}_manifest", format="parquet").to_table().to_pylist()
    done = [r for r in rows if r["status"] == "complete"]
    assert len(done) == 1
    return done[0]


@pytest.fixture(scope="session")  # for the session-scoped fixture that uses it
def small_input(tmp_path_factory):
    root = tmp_path_factory.mktemp("conn_in")
    vecs = [list(map(float, v)) for v in clustered(500, 16, seed=95)]
    vecs[4] = None
    vecs[8] = vecs[8][:3]
    vecs[12] = [3.0e38] * 16
    ids = list(range(500)) + [20, 21]
    vecs += [vecs[20], [v + 1.0 for v in vecs[21]]]
    return write_input(root / "in", ids, vecs, files=3)


ANY_LINE = re.compile(r"encoding: [\d,]+ of [\d,]+ rows \(")


def assign_args(small_input: Path, checkpoint: Path, table: str) -> list[str]:
    return ["--input", str(small_input), "--checkpoint", str(checkpoint), "--table", table,
            "--set", "encode.micro_batch=64"]


@pytest.fixture(scope="session")  # once per worker: its tables live in the shared session
def classic_run(spark, tiny_blob, small_input, tmp_path_factory) -> Path:
    """The library's run on this process's classic session (table conn.ids, the settings
    assign_args gives the console script): the warehouse the Connect runs are compared with.
    (The console script on a classic session publishes what the library does: the packaging
    test's spark-submit run.)"""
    from semid_udf.table.publish import run_assign

    from .spark_helpers import config

    wh = tmp_path_factory.mktemp("conn_classic") / "wh"
    run_assign(spark, config(encode={"micro_batch": 64}), tiny_blob, table="conn.ids", input_path=str(small_input),
               warehouse=str(wh))
    return wh


def test_assign_on_connect_gives_the_classic_table_rejects_and_counts(connect_url, tiny_checkpoint, small_input,
                                                                      classic_run, tmp_path):
    args = assign_args(small_input, tiny_checkpoint, "conn.ids")
    r = job("semid-assign", [*args, "--warehouse", str(tmp_path / "connect")], remote=connect_url)
    assert "rows in          502" in r.stdout
    assert published_files(tmp_path / "connect", "conn.ids") == published_files(classic_run, "conn.ids")
    assert rejects(tmp_path / "connect", "conn.ids") == rejects(classic_run, "conn.ids")
    reasons = {reason for _, reason, _ in rejects(classic_run, "conn.ids")}
    assert reasons == {"null_embedding", "wrong_length", "non_finite_latent", "duplicate_identical",
                       "duplicate_conflict"}
    a, b = complete_run(classic_run, "conn.ids"), complete_run(tmp_path / "connect", "conn.ids")
    for k in ("model_version", "rows_in", "rows_out", "rows_rejected", "rows_new", "model_digest"):
        assert a[k] == b[k], k
    da, db = json.loads(a["details"]), json.loads(b["details"])
    assert da["buckets"] == db["buckets"] and da["rejects_by_reason"] == db["rejects_by_reason"]
    assert (da["session"], db["session"]) == ("classic", "connect")


def test_the_issues_own_command_with_a_local_connect_server(tiny_checkpoint, small_input, classic_run, tmp_path):
    """SPARK_REMOTE=local[2]: pyspark starts a Connect server inside the job's process. With -q
    no progress line is logged, not even the "done" line every run logs otherwise."""
    r = job("semid-assign", [*assign_args(small_input, tiny_checkpoint, "p.c"), "--warehouse", str(tmp_path / "wh"),
                             "-q"], remote="local[2]")
    assert published_files(tmp_path / "wh", "p.c") == published_files(classic_run, "conn.ids")
    assert "rows in          502" in r.stdout and not ANY_LINE.search(r.stderr)


def test_train_and_report_on_connect_equal_classic(connect_url, spark, small_input, tmp_path):
    """semid-train and semid-report as Connect clients give the checkpoint and the report that
    the same commands' library calls give on this process's classic session."""
    from semid_udf.cli import common as cli_common
    from semid_udf.cli import report, train_rqvae
    from semid_udf.model.checkpoint import read_checkpoint

    common = ["--input", str(small_input), "--set", "model.hidden_dims=[32]", "--set", "model.latent_dim=8",
              "--set", "model.levels=3", "--set", "model.codebook_size=16", "--set", "train.epochs=2",
              "--set", "train.kmeans_iters=5", "--set", "train.threads=1"]
    args = train_rqvae.parser().parse_args([*common, "--checkpoint", str(tmp_path / "ck_classic")])
    train_rqvae.train(spark, cli_common.load(args), args.checkpoint, args.input)
    job("semid-train", [*common, "--checkpoint", str(tmp_path / "ck_connect")], remote=connect_url)
    a = json.loads((tmp_path / "ck_classic" / "config.json").read_text())
    b = json.loads((tmp_path / "ck_connect" / "config.json").read_text())
    assert a["model_version"] == b["model_version"] and a["weights_sha256"] == b["weights_sha256"]
    rep = ["--input", str(small_input), "--checkpoint", str(tmp_path / "ck_classic"), "--rows", "400",
           "--nn-sample", "300"]
    args = report.parser().parse_args([*rep, "--out", str(tmp_path / "rep_classic")])
    report.compare(spark, cli_common.load(args), [read_checkpoint(c) for c in args.checkpoint], args.out, args.input,
                   None, args.rows, args.nn_sample, names=list(args.checkpoint))
    job("semid-report", [*rep, "--out", str(tmp_path / "rep_connect")], remote=connect_url)
    ra = json.loads((tmp_path / "rep_classic" / "report.json").read_text())
    rb = json.loads((tmp_path / "rep_connect" / "report.json").read_text())
    assert ra == rb


LINE = re.compile(r"encoding: ([\d,]+) of 200,000 rows \((\d+)%\), ([\d,]+) items/s, (ETA \d+ s|done)")


@pytest.mark.parametrize("session", ["classic", "connect"])
def test_progress_of_a_200k_row_run(request, session, tiny_checkpoint, tmp_path_factory, caplog):
    """The encode's progress lines (rate, ETA, done): from the job as a Connect client, and from
    the library in this process on its classic session (the same logger the job writes to)."""
    root = tmp_path_factory.mktemp(f"progress_{session}")
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = clustered(200_000, 16, seed=96)
    (root / "in").mkdir()
    for k, part in enumerate(np.array_split(np.arange(200_000), 8)):
        emb = pa.FixedSizeListArray.from_arrays(pa.array(x[part].reshape(-1)), 16)
        pq.write_table(pa.table({"item_id": pa.array(part, pa.int64()), "embedding": emb}), root / "in" / f"{k}.parquet")
    remote = request.getfixturevalue("connect_url") if session == "connect" else None
    args = ["--input", str(root / "in"), "--checkpoint", str(tiny_checkpoint), "--table", "prog.ids",
            "--warehouse", str(root / "wh"), "--set", "encode.progress_s=0.5",
            "--set", "spark.spark.sql.files.maxPartitionBytes=1m"]
    if remote:  # a running server takes runtime settings only: the read tasks are sized by the session's setting
        args[-1] = "spark.spark.sql.files.maxPartitionBytes=1048576"
    if remote:
        logged = job("semid-assign", args, remote=remote).stderr
    else:
        from semid_udf.config import JobConfig, merge
        from semid_udf.model.checkpoint import read_checkpoint
        from semid_udf.table.publish import run_assign

        spark = request.getfixturevalue("spark")
        caplog.set_level("INFO", logger="semid_udf")
        spark.conf.set("spark.sql.files.maxPartitionBytes", "1m")
        try:
            run_assign(spark, merge(JobConfig(), {"encode": {"progress_s": 0.5}}).validate(),
                       read_checkpoint(tiny_checkpoint), table="prog.ids", input_path=str(root / "in"),
                       warehouse=str(root / "wh"))
        finally:
            spark.conf.unset("spark.sql.files.maxPartitionBytes")
        logged = caplog.text
    lines = [m for m in (LINE.search(ln) for ln in logged.splitlines()) if m]
    assert lines, logged[-3000:]
    assert lines[-1].group(4) == "done" and lines[-1].group(1) == "200,000"
    assert any(0 < int(m.group(1).replace(",", "")) < 200_000 and m.group(4).startswith("ETA") for m in lines), \
        [m.group(0) for m in lines]
