"""Publishing is all-or-nothing: runs killed at each step boundary leave exactly the last
commit readable (through the views in a new session, DuckDB and pandas); a model version
stays bound to one model; one writer at a time; bounded failures; odd paths and names."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from semid_udf.model.checkpoint import read_checkpoint, save_checkpoint
from semid_udf.config import ModelConfig, TrainConfig
from semid_udf.errors import CheckpointError, ConfigError, LockError, ReconcileError
from semid_udf.table.publish import run_assign
from semid_udf.model.train import fit

from .conftest import ROOT, clustered
from .spark_helpers import config, failpoint, published_files, table_rows, write_input

BIN = Path(sys.executable).parent


def start(args, wh: Path, tag: str, logs: Path | None = None, remote: str | None = None, uri: bool = False,
          cwd: Path = ROOT, **env_extra):
    """semid-assign in its own process group (a Spark Connect client when ``remote``; the
    warehouse as a ``file://`` URI when ``uri``); logs to files (a full pipe would block it)."""
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, **env_extra)
    env.pop("SPARK_REMOTE", None)
    if remote:
        env["SPARK_REMOTE"] = remote
    logs = logs or wh.parent
    out, err = logs / f"{tag}.out", logs / f"{tag}.err"
    p = subprocess.Popen([str(BIN / "semid-assign"), *args, "--warehouse", f"file://{wh}" if uri else str(wh)],
                         cwd=cwd, env=env, stdout=open(out, "w"), stderr=open(err, "w"), start_new_session=True)
    p.err_path = err  # type: ignore[attr-defined]
    return p


def wait_for(p, text: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if text in p.err_path.read_text():
            return
        if p.poll() is not None:
            raise AssertionError(f"exited ({p.returncode}) before {text!r}: " + p.err_path.read_text()[-3000:])
        time.sleep(0.05)
    raise AssertionError(f"no {text!r} within {timeout} s: " + p.err_path.read_text()[-3000:])


def kill(p) -> None:
    os.killpg(p.pid, signal.SIGKILL)  # the driver and its JVM
    p.wait()


def read_views(wh: Path, table: str) -> dict:
    """The table, its _latest view and its _versions view, from a new process and session."""
    code = f"""
import json, sys
from semid_udf.spark.session import build_session
s = build_session("reader", {{"spark.ui.enabled": "false"}}, {str(wh)!r})
t = sorted((r.item_id, r.semantic_id) for r in s.table({table!r}).collect())
latest = sorted((r.item_id, r.semantic_id) for r in s.table({table + '_latest'!r}).collect())
versions = [r.asDict() for r in s.table({table + '_versions'!r}).select("model_version", "status").collect()]
sys.stdout.write("VIEWS " + json.dumps({{"table": t, "latest": latest, "versions": versions}}) + "\\n")
"""
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=wh.parent,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    line = next(x for x in r.stdout.splitlines() if x.startswith("VIEWS "))
    out = json.loads(line[len("VIEWS "):])
    out["table"] = [tuple(x) for x in out["table"]]
    out["latest"] = [tuple(x) for x in out["latest"]]
    return out


def read_files(wh: Path, table: str, monkeypatch, folder: Path | None = None) -> dict[str, list]:
    """The DuckDB and pandas recipes of docs/usage.md (the files the manifest names), run as written;
    ``folder``: where the tables' folders are (default: the database's in the warehouse)."""
    import re

    import duckdb

    db, name = table.split(".")[-2:]
    text = (ROOT / "docs" / "usage.md").read_text()
    prefix = f"{folder}/{name}" if folder else f"{wh}/{db}.db/{name}"
    rename = lambda s: s.replace("wh/recsys.db/semantic_ids", prefix)  # noqa: E731
    duck = rename(re.findall(r"```sql duckdb\n(.*?)```", text, flags=re.S)[0])
    con = duckdb.connect()
    last = None
    for q in [s.strip() for s in "\n".join(x for x in duck.splitlines() if not x.strip().startswith("--")).split(";")
              if s.strip()]:
        last = con.execute(q.replace("item_id = 1000042", "true")).fetchall()
    ns: dict = {}
    exec(rename(re.findall(r"```python pandas\n(.*?)```", text, flags=re.S)[0]), ns)
    return {"duckdb": sorted(last), "pandas": sorted(zip(ns["ids"].item_id.tolist(), ns["ids"].semantic_id.tolist()))}


@pytest.fixture(scope="module")
def two_inputs(tmp_path_factory):
    """Input A (items 0-299) and B (items 100-399, other vectors): a run's state shows which."""
    root = tmp_path_factory.mktemp("kills")
    x = clustered(400, 16, seed=91)
    a = write_input(root / "a", list(range(300)), [list(map(float, v)) for v in x[:300]])
    b = write_input(root / "b", list(range(100, 400)), [list(map(float, v)) for v in x[100:]])
    return root, a, b


def connect_views(url: str, table: str) -> dict:
    """The table and its views from a new Spark Connect session."""
    from pyspark.sql.connect.session import SparkSession

    s = SparkSession.builder.remote(url).create()
    try:
        return {"table": sorted((r.item_id, r.semantic_id) for r in s.table(table).collect()),
                "latest": sorted((r.item_id, r.semantic_id) for r in s.table(f"{table}_latest").collect()),
                "versions": [r.asDict() for r in s.table(f"{table}_versions").select("model_version", "status")
                             .collect()]}
    finally:
        s.stop()


# Where a run is killed: paused at the stage (SEMID_FAILPOINT) before the table write, after
# it, right before the manifest row that commits it, and right after.
BEFORE_COMMIT = ["writing 300 rows", "reconciling counts", "committing"]


def test_kills_at_every_step_boundary_leave_exactly_the_last_commit(connect_url, tiny_checkpoint, two_inputs,
                                                                      tmp_path, monkeypatch):
    """The runs are Spark Connect clients of one server (its metastore outlives them), killed
    at each boundary; after each kill a new session, DuckDB and pandas read the table."""
    root, a, b = two_inputs
    wh = tmp_path / "wh"
    base = ["--checkpoint", str(tiny_checkpoint), "--table", "kc.ids", "--set", "encode.micro_batch=64"]
    first = start(["--input", str(a), *base], wh, "first", remote=connect_url)
    assert first.wait(timeout=600) == 0, first.err_path.read_text()[-3000:]
    state_a = connect_views(connect_url, "kc.ids")
    assert [i for i, _ in state_a["table"]] == list(range(300))

    def check(expected: list, status: str) -> None:
        views, files = connect_views(connect_url, "kc.ids"), read_files(wh, "kc.ids", monkeypatch)
        assert views["table"] == expected
        assert views["latest"] == views["table"] == files["duckdb"] == files["pandas"]
        assert {v["status"] for v in views["versions"]} == {status}

    for k, point in enumerate(BEFORE_COMMIT):
        p = start(["--input", str(b), *base], wh, f"kill{k}", remote=connect_url, **failpoint(point))
        wait_for(p, f"failpoint: paused at {point}")
        kill(p)
        check(state_a["table"], "partial")
    p = start(["--input", str(b), *base], wh, "after", remote=connect_url,
              **failpoint("removing what no commit uses"))
    wait_for(p, "failpoint: paused at removing")
    kill(p)  # after the commit, before the clean-up
    state_b = connect_views(connect_url, "kc.ids")
    assert [i for i, _ in state_b["table"]] == list(range(100, 400))
    check(state_b["table"], "complete")

    final = start(["--input", str(b), *base], wh, "final", remote=connect_url)  # cleans up after all of them
    assert final.wait(timeout=600) == 0, final.err_path.read_text()[-3000:]
    assert [i for i, _ in connect_views(connect_url, "kc.ids")["table"]] == list(range(100, 400))
    parts = sorted(p.name for p in (wh / "kc.db" / "ids_data").glob("model_version=*/run_id=*"))
    assert len(parts) == 1, parts  # what the killed runs and the replaced run left is gone


def test_a_classic_warehouse_at_a_file_uri_one_process_at_a_time_then_killed_during_the_write(
        tiny_checkpoint, two_inputs, tmp_path, monkeypatch):
    """One warehouse, as users run the console script on it (one process per run, so one
    JVM and embedded metastore each):

    - ``--warehouse file:///abs`` from a clean working directory publishes into /abs (no folder
      named 'file:', no derby.log or metastore_db appears there);
    - while a run holds the warehouse (given as a plain path), a second run (the file:// URI of
      the same folder) waits, bounded, then says who holds it: the embedded metastore admits one
      process;
    - the holder, let go, is killed with its JVM while Spark writes the run's files: a new
      process reads the last commit through the views, and DuckDB and pandas agree."""
    root, a, b = two_inputs
    wh, cwd = tmp_path / "wh", tmp_path / "cwd"
    cwd.mkdir()
    base = ["--checkpoint", str(tiny_checkpoint), "--table", "k.ids", "--set", "encode.micro_batch=64"]
    first = start(["--input", str(a), *base], wh, "first", uri=True, cwd=cwd)
    assert first.wait(timeout=600) == 0, first.err_path.read_text()[-3000:]
    assert published_files(wh, "k.ids")["item_id"] == list(range(300))
    assert sorted(p.name for p in cwd.iterdir()) == []  # no 'file:' folder, no derby.log, no metastore_db

    release = tmp_path / "release"
    holder = start(["--input", str(b), *base], wh, "holder", **failpoint("encoding: validating", release))
    try:
        wait_for(holder, "failpoint: paused at encoding")
        t = time.monotonic()
        second = start(["--input", str(b), *base, "--set", "output.lock_wait_s=3"], wh, "second", uri=True, cwd=cwd)
        assert second.wait(timeout=300) == 2
        err = second.err_path.read_text().strip().splitlines()[-1]
        assert err.startswith("semid-assign: error: warehouse ") and "is in use by another process: run " in err
        assert f"pid {holder.pid}" in err and "waited 3 s (output.lock_wait_s)" in err
        assert time.monotonic() - t < 120

        release.touch()
        wait_for(holder, "writing 300 rows")
        time.sleep(0.3)
    finally:
        if holder.poll() is None:  # during its write; or, when a check above failed, not left paused for an hour
            kill(holder)
    views, files = read_views(wh, "k.ids"), read_files(wh, "k.ids", monkeypatch)
    assert [i for i, _ in views["table"]] == list(range(300))
    assert views["latest"] == views["table"] == files["duckdb"] == files["pandas"]
    assert {v["status"] for v in views["versions"]} == {"partial"}


def test_a_reconcile_error_keeps_the_last_commit(spark, tiny_blob, two_inputs, tmp_path, monkeypatch):
    root, a, b = two_inputs
    wh = str(tmp_path / "wh")
    ok = run_assign(spark, config(), tiny_blob, table="rec.ids", input_path=str(a), warehouse=wh)
    before = table_rows(spark, "rec.ids", ok.model_version)
    from semid_udf.table.commit import Publication

    real = Publication._write_segment

    def short(self, qname, df):  # lose a row on the way: the counts cannot reconcile
        return real(self, qname, df.limit(299) if "_data" in qname else df)

    monkeypatch.setattr(Publication, "_write_segment", short)
    with pytest.raises(ReconcileError, match="counts: expected rows_in 300"):
        run_assign(spark, config(), tiny_blob, table="rec.ids", input_path=str(b), warehouse=wh)
    import pandas as pd

    pd.testing.assert_frame_equal(table_rows(spark, "rec.ids", ok.model_version), before)
    assert spark.table("rec.ids_latest").count() == 300
    assert published_files(Path(wh), "rec.ids")["item_id"] == list(range(300))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two checkpoints named by the same explicit version: another beam, other weights."""
    root = tmp_path_factory.mktemp("bind")
    x = clustered(2000, 16, seed=92)
    m1, meta = fit(x, ModelConfig(hidden_dims=(32,), latent_dim=8, levels=3, codebook_size=16, beam=2),
                   TrainConfig(epochs=2, batch_size=256, kmeans_iters=5, seed=1))
    save_checkpoint(m1, m1.cfg, root / "v1", training=meta, model_version="shared-name")
    cfg = json.loads((root / "v1" / "config.json").read_text())
    shutil.copytree(root / "v1", root / "beam1")
    cfg["model"]["beam"] = 1  # config.json edited: same weights, another encoder
    (root / "beam1" / "config.json").write_text(json.dumps(cfg))
    m2, meta2 = fit(x, ModelConfig(hidden_dims=(32,), latent_dim=8, levels=3, codebook_size=16, beam=2),
                    TrainConfig(epochs=2, batch_size=256, kmeans_iters=5, seed=2))
    save_checkpoint(m2, m2.cfg, root / "other", training=meta2, model_version="shared-name")
    return {k: read_checkpoint(root / k) for k in ("v1", "beam1", "other")}


def test_a_version_stays_bound_to_its_model(spark, models, two_inputs, tmp_path):
    root, a, b = two_inputs
    wh = str(tmp_path / "wh")
    run_assign(spark, config(), models["v1"], table="bind.ids", input_path=str(a), warehouse=wh)
    runs = spark.table("bind.ids_manifest").count()
    for other in ("beam1", "other"):
        for mode in ("full", "append"):
            with pytest.raises(ConfigError, match="model version shared-name of .*bind.ids was published with another "
                                                  "model"):
                run_assign(spark, config(), models[other], table="bind.ids", input_path=str(b), warehouse=wh, mode=mode)
    with pytest.raises(ConfigError, match="published with another model"):  # the micro-batch is part of it too
        run_assign(spark, config(encode={"micro_batch": 32}), models["v1"], table="bind.ids", input_path=str(b),
                   warehouse=wh)
    assert spark.table("bind.ids_manifest").count() == runs  # refused before the run was even recorded
    assert [r[0] for r in spark.sql("SELECT DISTINCT run_id FROM bind.ids").collect()] == [
        spark.table("bind.ids_manifest").where("status = 'complete'").first()["run_id"]]


def test_append_needs_a_published_version(spark, tiny_blob, two_inputs, tmp_path):
    root, a, b = two_inputs
    with pytest.raises(ConfigError, match="--mode append: model version .* has no complete run in app.ids"):
        run_assign(spark, config(), tiny_blob, table="app.ids", input_path=str(a), warehouse=str(tmp_path / "wh"),
                   mode="append")
    assert not spark.catalog.tableExists("app.ids")


def test_a_model_that_cannot_be_built_fails_before_any_table(spark, tiny_checkpoint, two_inputs, tmp_path):
    root, a, b = two_inputs
    bad = tmp_path / "bad"
    shutil.copytree(tiny_checkpoint, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["model"]["levels"] = 2
    cfg["model_version_source"] = "explicit"
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"the weights do not fit a model.kind=rqvae model of its config.json: "
                                              r"missing \[\], unexpected \[\], shapes \['quantizer.codebooks: "
                                              r"expected \[2, 16, 8\], got \[3, 16, 8\]'\]"):
        run_assign(spark, config(), read_checkpoint(bad), table="nobuild.ids", input_path=str(a),
                   warehouse=str(tmp_path / "wh"))
    assert not spark.catalog.databaseExists("nobuild")


def test_a_malformed_weights_file_is_named(tiny_checkpoint, tmp_path):
    import hashlib

    bad = tmp_path / "bad"
    shutil.copytree(tiny_checkpoint, bad)
    w = bytearray((bad / "model.safetensors").read_bytes())
    w[9:20] = b"@@@@@@@@@@@"  # the JSON header broken; the sha256 in config.json updated to match
    (bad / "model.safetensors").write_bytes(bytes(w))
    cfg = json.loads((bad / "config.json").read_text())
    cfg["weights_sha256"] = hashlib.sha256(bytes(w)).hexdigest()
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=f"{bad / 'model.safetensors'}: not a valid safetensors file"):
        read_checkpoint(bad)


def test_a_warehouse_path_with_spaces_and_mixed_case_names(spark, tiny_blob, two_inputs, tmp_path):
    root, a, b = two_inputs
    wh = tmp_path / "wh 7 space"
    res = run_assign(spark, config(), tiny_blob, table="Spacey.SID", input_path=str(a), warehouse=str(wh))
    assert res.table == "spacey.sid" and (wh / "spacey.db" / "sid_data").is_dir()
    again = run_assign(spark, config(), tiny_blob, table="spacey.sid", input_path=str(b), warehouse=str(wh))
    assert again.rows_out == 300
    assert published_files(wh, "spacey.sid")["item_id"] == list(range(100, 400))


def test_a_second_writer_of_a_version_waits_then_fails_naming_the_holder(spark, tiny_blob, two_inputs, tmp_path):
    from semid_udf.table.catalog import TableName, ensure_database
    from semid_udf.table.locks import VersionLock

    root, a, b = two_inputs
    wh = str(tmp_path / "wh")
    name = TableName.parse("lk.ids")
    ensure_database(spark, name, wh)
    holder = VersionLock(spark, name, tiny_blob.model_version, "the-other-run", 0)
    holder.acquire()
    try:
        t = time.monotonic()
        with pytest.raises(LockError, match=r"another run is writing it: run the-other-run \(host .*, pid "
                                            rf"{os.getpid()}.*waited 2 s \(output.lock_wait_s\)"):
            run_assign(spark, config(output={"lock_wait_s": 2}), tiny_blob, table="lk.ids", input_path=str(a),
                       warehouse=wh)
        assert 2 <= time.monotonic() - t < 60
    finally:
        holder.release()
    # a lock left by a process that no longer exists is taken over at once
    spark.sql(f"CREATE VIEW {holder.qview} TBLPROPERTIES ('semid.run_id' = 'killed', 'semid.host' = "
              f"'{__import__('socket').gethostname()}', 'semid.pid' = '999999999', 'semid.pid_start' = '1', "
              f"'semid.heartbeat' = '{time.time():.0f}') AS SELECT 1 AS x")
    res = run_assign(spark, config(output={"lock_wait_s": 0}), tiny_blob, table="lk.ids", input_path=str(a),
                     warehouse=wh)
    assert res.rows_out == 300 and not spark.catalog.tableExists(holder.view)


def test_a_full_disk_ends_the_run_with_an_error(tiny_checkpoint, two_inputs, tmp_path):
    """A warehouse on a 40 MB file system: the run fails within its bounds and says why."""
    root, a, b = two_inputs
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {r.stderr.strip()}")
    try:
        (mnt / "filler").write_bytes(b"\0" * (37 << 20))  # leave less than the metastore needs (about 4 MB)
        t = time.monotonic()
        p = start(["--input", str(a), "--checkpoint", str(tiny_checkpoint), "--table", "full.ids",
                   "--set", "output.metastore_timeout_s=60"], mnt / "wh", "full", logs=tmp_path)
        try:
            code = p.wait(timeout=600)
        finally:
            if p.poll() is None:
                kill(p)
        assert code != 0 and time.monotonic() - t < 400
        last = p.err_path.read_text().strip().splitlines()[-1]
        assert last.startswith("semid-assign: error: "), last
        assert re.search(r"the file system has \d+ MB free, too little|no answer after 60 s", last), last
        manifest = mnt / "wh" / "full.db" / "ids_manifest"
        if manifest.exists():  # nothing was committed
            import pyarrow.dataset as ds

            assert "complete" not in ds.dataset(manifest, format="parquet").to_table().column("status").to_pylist()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_external_tables_at_a_location_outside_the_warehouse_with_a_three_part_name(spark, tiny_blob, two_inputs,
                                                                                      tmp_path, monkeypatch):
    """Unity Catalog's shape: catalog.schema.table, Parquet only as external tables at a LOCATION."""
    root, a, b = two_inputs
    wh, loc = tmp_path / "wh", tmp_path / "elsewhere" / "semid"
    for inp in (a, b):
        run_assign(spark, config(), tiny_blob, table="spark_catalog.uc.ids", input_path=str(inp), warehouse=str(wh),
                   location=str(loc))
    fresh = spark.newSession()  # its own SQL state; the catalog and the files are all it shares
    table = sorted((r.item_id, r.semantic_id) for r in fresh.table("spark_catalog.uc.ids").collect())
    assert [i for i, _ in table] == list(range(100, 400))
    files = read_files(wh, "uc.ids", monkeypatch, folder=loc)
    assert files["duckdb"] == files["pandas"] == table
    assert sorted(p.name for p in loc.iterdir()) == ["ids_data", "ids_manifest", "ids_rejects"]
    assert not (wh / "uc.db" / "ids_data").exists()
    runs = list((loc / "ids_data").glob("model_version=*/run_id=*"))
    assert len(runs) == 1  # the replaced run's files are gone too (an external table keeps them on DROP PARTITION)
    kinds = [fresh.catalog.getTable(f"spark_catalog.uc.ids{x}").tableType for x in ("_data", "_rejects", "_manifest", "")]
    assert kinds == ["EXTERNAL", "EXTERNAL", "EXTERNAL", "VIEW"]


def test_table_names_are_parsed_and_normalised():
    from semid_udf.table.catalog import TableName

    assert TableName.parse("Main.RecSys.SIDs") == TableName("main", "recsys", "sids")
    assert TableName.parse("recsys.sids").q("_data") == "`recsys`.`sids_data`"
    assert TableName.parse("main.recsys.sids").q() == "`main`.`recsys`.`sids`"
    assert TableName.parse("sids") == TableName(None, "default", "sids")
    for bad in ("a.b.c.d", "a..b", "1a.b", "a b.c", "a.b-c", ""):
        with pytest.raises(ConfigError, match="expected DB.NAME or CATALOG.DB.NAME"):
            TableName.parse(bad)


def _manifest_rows(wh: Path, table: str) -> list[dict]:
    import pyarrow.dataset as ds

    db, name = table.split(".")
    return ds.dataset(wh / f"{db}.db" / f"{name}_manifest", format="parquet").to_table().to_pylist()


def test_a_row_left_between_a_task_commit_and_its_job_commit_never_becomes_a_commit(spark, tiny_blob, two_inputs,
                                                                                   tmp_path):
    """The fault: a process killed after its manifest write's task commit and before its job
    commit. Under Spark's default commit algorithm that left the row in a committed task
    folder under _manifest/_temporary/0/, and the next write to the manifest merged it in."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root, a, b = two_inputs
    wh = tmp_path / "wh"
    first = run_assign(spark, config(), tiny_blob, table="tc.ids", input_path=str(a), warehouse=str(wh))
    done = [r for r in _manifest_rows(wh, "tc.ids") if r["status"] == "complete"]
    assert len(done) == 1
    # what the kill leaves: the killed run's complete row, with the seq the next commit will take
    killed = {**done[0], "run_id": "killed-run", "seq": done[0]["seq"] + 1, "segments": ["killed-run"], "files": []}
    task = wh / "tc.db" / "ids_manifest" / "_temporary" / "0" / "task_202612050000_0042_m_000000"
    task.mkdir(parents=True)
    schema = pq.read_schema(next((wh / "tc.db" / "ids_manifest").glob("part-*.parquet")))
    pq.write_table(pa.Table.from_pylist([killed], schema=schema), task / "part-00000-killed.c000.snappy.parquet")

    second = run_assign(spark, config(), tiny_blob, table="tc.ids", input_path=str(b), warehouse=str(wh))
    rows = _manifest_rows(wh, "tc.ids")
    assert "killed-run" not in {r["run_id"] for r in rows}  # the next writes did not merge it in
    complete = sorted((r["seq"], r["run_id"]) for r in rows if r["status"] == "complete")
    assert complete == [(done[0]["seq"], first.run_id), (done[0]["seq"] + 1, second.run_id)]
    assert published_files(wh, "tc.ids")["item_id"] == list(range(100, 400))
    assert sorted(r.item_id for r in spark.table("tc.ids").select("item_id").collect()) == list(range(100, 400))


def test_the_views_pick_one_commit_when_two_complete_rows_share_a_seq(spark, tiny_blob, two_inputs, tmp_path):
    from semid_udf.table import catalog as ct

    root, a, b = two_inputs
    wh = tmp_path / "wh"
    res = run_assign(spark, config(), tiny_blob, table="tie.ids", input_path=str(a), warehouse=str(wh))
    name = ct.TableName.parse("tie.ids")
    row = ct.last_commit(spark, name, res.model_version)
    # a restored or hand-edited manifest: another complete row with the same seq, naming no data
    for run_id, finished in (("aaa-older", row["finished_at"].replace(year=2001)), ("zzz-same-time",
                                                                                   row["finished_at"])):
        ct.write_manifest(spark, name, {**row, "run_id": run_id, "finished_at": finished, "segments": [],
                                        "files": []})
    chosen = ct.last_commit(spark, name, res.model_version)
    assert chosen["run_id"] == "zzz-same-time"  # same seq and finish: the higher run id
    for _ in range(3):  # the view chooses that same row, every time
        assert spark.table("tie.ids").count() == 0
        assert spark.table("tie.ids_latest").count() == 0


def test_a_stuck_metastore_cannot_hold_the_run_past_its_bounds(spark, tiny_blob, two_inputs, tmp_path, monkeypatch):
    """A full disk under an existing warehouse: the metastore stops answering. Every wait is
    bounded, the lock's release and the failed run's record too."""
    import threading

    import semid_udf.table.catalog as ct
    import semid_udf.table.locks as locks
    from semid_udf.errors import MetastoreTimeoutError

    root, a, b = two_inputs
    wh = str(tmp_path / "wh")
    run_assign(spark, config(), tiny_blob, table="stuck.ids", input_path=str(a), warehouse=wh)
    gate = threading.Event()
    monkeypatch.setattr(ct, "write_manifest", lambda *args, **kw: gate.wait())  # never answers
    real_props = locks.VersionLock._props
    calls = {"n": 0}

    def props(self):  # the lock is taken, then the metastore stops answering for its release too
        calls["n"] += 1
        if calls["n"] > 1:
            gate.wait()
        return real_props(self)

    monkeypatch.setattr(locks.VersionLock, "_props", props)
    t = time.monotonic()
    try:
        with pytest.raises(MetastoreTimeoutError, match=r"writing the manifest row \(running\): no answer after 3 s"):
            run_assign(spark, config(output={"metastore_timeout_s": 3}), tiny_blob, table="stuck.ids",
                       input_path=str(b), warehouse=wh)
        assert time.monotonic() - t < 60
    finally:
        gate.set()


def test_a_warehouse_whose_metastore_another_program_holds_is_refused_naming_it(tiny_checkpoint, two_inputs,
                                                                             tmp_path):
    """Not a semid run: a Spark application of the user's own with the warehouse's embedded
    metastore open. semid says who holds it at once, instead of Hive's error after a minute."""
    root, a, b = two_inputs
    wh = tmp_path / "wh"
    holder_code = f"""
import sys, time
from pyspark.sql import SparkSession
s = (SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false")
     .config("spark.sql.warehouse.dir", {str(wh)!r})
     .config("spark.hadoop.javax.jdo.option.ConnectionURL", "jdbc:derby:;databaseName={wh}/metastore_db;create=true")
     .enableHiveSupport().getOrCreate())
s.sql("CREATE DATABASE held").collect()
print("READY", flush=True)
time.sleep(600)
"""
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable)
    env.pop("SPARK_REMOTE", None)
    holder = subprocess.Popen([sys.executable, "-c", holder_code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True, env=env, cwd=tmp_path, start_new_session=True)
    try:
        assert holder.stdout.readline().strip() == "READY"
        t = time.monotonic()
        second = start(["--input", str(b), "--checkpoint", str(tiny_checkpoint), "--table", "held.ids"], wh,
                       "second", logs=tmp_path)
        assert second.wait(timeout=300) == 2
        last = second.err_path.read_text().strip().splitlines()[-1]
        assert last.startswith(f"semid-assign: error: warehouse {wh}: its embedded metastore is open in another "
                               f"process (pid "), last
        assert "which is not a semid run" in last and time.monotonic() - t < 60
    finally:
        kill(holder)


def test_a_warehouse_path_with_percent_is_refused_creating_nothing(tiny_checkpoint, two_inputs, tmp_path):
    """A warehouse whose path has % is refused before any work and creates nothing, there or
    in the working directory (``file://`` warehouses: the classic warehouse test above)."""
    root, a, b = two_inputs
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable)
    env.pop("SPARK_REMOTE", None)
    odd = tmp_path / "wh_pct%41x"
    bad = subprocess.run([str(BIN / "semid-assign"), "--input", str(a), "--checkpoint", str(tiny_checkpoint),
                          "--table", "uri.ids", "--warehouse", str(odd)], capture_output=True, text=True, env=env,
                         cwd=cwd, timeout=600)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == (
        f"semid-assign: error: --warehouse {odd}: expected a folder whose path has none of the characters % # ? "
        f"(Spark and the Hive metastore encode them differently), got % in {odd}; choose another folder")
    assert not odd.exists() and sorted(p.name for p in cwd.iterdir()) == []


def test_a_commit_keeps_only_the_rejects_of_its_own_runs(spark, tiny_blob, tmp_path):
    """Rejects of runs a commit replaced go with them: the README's rejects query counts once."""
    x = clustered(60, 16, seed=93)
    vecs = [list(map(float, v)) for v in x]
    vecs[3] = None  # one bad row in every run
    inp = write_input(tmp_path / "in", list(range(60)), vecs)
    wh = str(tmp_path / "wh")
    first = run_assign(spark, config(), tiny_blob, table="rj.ids", input_path=str(inp), warehouse=wh)
    second = run_assign(spark, config(), tiny_blob, table="rj.ids", input_path=str(inp), warehouse=wh)
    assert first.rows_rejected == second.rows_rejected == 1
    rows = spark.table("rj.ids_rejects").collect()
    assert [(r.item_id, r.reason, r.run_id) for r in rows] == [("3", "null_embedding", second.run_id)]
