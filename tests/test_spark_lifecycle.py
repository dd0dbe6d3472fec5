"""Model versions, append mode, sorted files, views and faults, in the shared session."""
from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from semid_udf.spark.api import session_conf
from semid_udf.spark.progress import group_stages
from semid_udf.table.concurrency import Background
from semid_udf.table.publish import run_assign
from semid_udf.model.checkpoint import read_checkpoint, save_checkpoint
from semid_udf.config import ModelConfig, TrainConfig
from semid_udf.errors import UnsafeSettingError
from semid_udf.model.train import fit

from . import faults
from .conftest import ROOT, clustered
from .spark_helpers import committed_files, config, table_rows, write_input

SIDS = ["sid_0", "sid_1", "sid_2"]


@pytest.fixture(scope="module")
def blob_b(tmp_path_factory):
    model, meta = fit(clustered(3000, 16, seed=1), ModelConfig(hidden_dims=(32,), latent_dim=8, levels=3, codebook_size=16),
                      TrainConfig(epochs=2, batch_size=256, kmeans_iters=5, seed=99))
    d = tmp_path_factory.mktemp("ckb") / "b"
    save_checkpoint(model, model.cfg, d, training=meta)
    return read_checkpoint(d)


@pytest.fixture(scope="module")
def vectors():
    return clustered(300, 16, seed=41, centers=6)


def files_of(files: list[Path]) -> dict[str, tuple[str, float]]:
    return {str(p): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime) for p in files}


def test_version_b_leaves_version_a_untouched(spark, tiny_blob, blob_b, vectors, tmp_path):
    inp = write_input(tmp_path / "in", list(range(300)), [list(map(float, v)) for v in vectors])
    wh = tmp_path / "wh"
    a = run_assign(spark, config(), tiny_blob, table="life.v", input_path=str(inp), warehouse=str(wh))
    part_a = committed_files(wh / "life.db", "v", a.model_version)
    before = files_of(part_a)
    assert before
    b = run_assign(spark, config(), blob_b, table="life.v", input_path=str(inp), warehouse=str(wh))
    assert a.model_version != b.model_version
    assert committed_files(wh / "life.db", "v", a.model_version) == part_a and files_of(part_a) == before
    versions = spark.table("life.v_versions").toPandas().set_index("model_version")
    assert set(versions.index) == {a.model_version, b.model_version}
    assert (versions.status == "complete").all() and (versions.rows_out == 300).all()
    latest = spark.sql("SELECT DISTINCT model_version FROM life.v_latest").collect()
    assert [r[0] for r in latest] == [b.model_version]
    # a full rerun of A replaces A only, and makes A the latest complete version
    run_assign(spark, config(), tiny_blob, table="life.v", input_path=str(inp), warehouse=str(wh))
    assert spark.table("life.v").where(f"model_version = '{b.model_version}'").count() == 300
    assert [r[0] for r in spark.sql("SELECT DISTINCT model_version FROM life.v_latest").collect()] == [a.model_version]


def test_files_are_sorted_by_codes(spark, tiny_blob, vectors, tmp_path):
    inp = write_input(tmp_path / "in", list(range(300)), [list(map(float, v)) for v in vectors])
    wh = tmp_path / "wh"
    res = run_assign(spark, config(output={"files_per_version": 3}), tiny_blob, table="lifes.s", input_path=str(inp),
                     warehouse=str(wh))
    files = committed_files(wh / "lifes.db", "s", res.model_version)
    assert len(files) >= 2
    ranges = []
    for f in files:
        t = pq.read_table(f).to_pandas()
        keys = list(t[SIDS + ["sid_suffix"]].itertuples(index=False, name=None))
        assert keys == sorted(keys), f"{f.name} is not sorted by codes"
        ranges.append((keys[0], keys[-1]))
    ranges.sort()
    assert all(ranges[i][1] < ranges[i + 1][0] for i in range(len(ranges) - 1)), "files overlap in code ranges"


def view_created(spark, table: str) -> dict[str, str]:
    """When each of ``table``'s views was (last) created: DESCRIBE's creation time, in seconds."""
    out = {}
    for view in (table, f"{table}_versions", f"{table}_latest", f"{table}_tokens"):
        rows = spark.sql(f"DESCRIBE TABLE EXTENDED {view}").collect()
        out[view] = next(r["data_type"] for r in rows if r["col_name"] == "Created Time")
    return out


def test_append_keeps_published_rows_and_gives_new_items_fresh_ids(spark, tiny_blob, vectors, tmp_path):
    """Also: Spark replaces a view by dropping and creating it, so a reader during a commit could
    find no view; a run that finds the views as it would define them leaves them in place (the
    same creation time), and puts back a view defined otherwise."""
    import time

    wh = tmp_path / "wh"
    vecs = [list(map(float, v)) for v in vectors]
    first = write_input(tmp_path / "day1", list(range(200)), vecs[:200])
    run_assign(spark, config(), tiny_blob, table="lifea.a", input_path=str(first), warehouse=str(wh))
    before = spark.table("lifea.a").toPandas().sort_values("item_id").reset_index(drop=True)
    views = view_created(spark, "lifea.a")
    spark.sql("CREATE OR REPLACE VIEW lifea.a_tokens AS SELECT 1 AS x")
    time.sleep(1.1)  # creation times are in seconds
    changed = [[v + 0.5 for v in vec] for vec in vecs[:10]]  # items 0-9 arrive with new embeddings
    second = write_input(tmp_path / "day2", list(range(300)), changed + vecs[10:])
    res = run_assign(spark, config(), tiny_blob, table="lifea.a", input_path=str(second), warehouse=str(wh),
                     mode="append")
    assert (res.rows_in, res.rows_new, res.rows_out, res.rows_rejected) == (300, 100, 300, 0)
    assert res.details["rows_embedding_changed"] == 10
    now = view_created(spark, "lifea.a")
    assert now.pop("lifea.a_tokens") != views.pop("lifea.a_tokens")  # put back
    assert now == views  # left in place
    assert spark.table("lifea.a_tokens").columns == ["item_id", "semantic_id", "tokens", "model_version"]
    after = spark.table("lifea.a").toPandas().sort_values("item_id").reset_index(drop=True)
    old = after[after.item_id < 200].reset_index(drop=True)
    pd.testing.assert_frame_equal(old, before)  # byte-identical, run_id and hash included
    assert after.item_id.is_unique and after.semantic_id.is_unique and len(after) == 300
    new = after[after.item_id >= 200]
    for key, g in after.groupby(SIDS):
        olds = g[g.item_id < 200].sid_suffix
        news = g[g.item_id >= 200].sort_values("item_id").sid_suffix
        start = (olds.max() + 1) if len(olds) else 0
        assert news.tolist() == list(range(start, start + len(news))), key
    assert len(new) == 100
    # the same append again adds nothing and changes nothing
    again = run_assign(spark, config(), tiny_blob, table="lifea.a", input_path=str(second), warehouse=str(wh),
                       mode="append")
    assert again.rows_new == 0
    pd.testing.assert_frame_equal(spark.table("lifea.a").toPandas().sort_values("item_id").reset_index(drop=True), after)


FAULT_CFG = config(plugin={"factory": "faults:controlled", "method": "encode", "layout": "batch_major"})


@contextlib.contextmanager
def fault(spark, mode):
    """Jobs started meanwhile from this thread (and threads it starts) inject fault ``mode``."""
    spark.sparkContext.setLocalProperty(faults.PROPERTY, mode)
    try:
        yield
    finally:
        spark.sparkContext.setLocalProperty(faults.PROPERTY, None)


@pytest.fixture(scope="module")
def faults_shipped(spark):
    spark.sparkContext.addPyFile(str(ROOT / "tests" / "faults.py"))


@pytest.mark.parametrize("mode", ["raise_first_attempt", "kill_first_attempt"])
def test_task_faults_are_retried_to_the_exact_table(spark, tiny_blob, vectors, tmp_path, faults_shipped, mode):
    inp = write_input(tmp_path / "in", list(range(300)), [list(map(float, v)) for v in vectors], files=2)
    wh = str(tmp_path / "wh")
    db = f"f_{mode}"
    clean = run_assign(spark, config(), tiny_blob, table=f"{db}.clean", input_path=str(inp), warehouse=wh)
    with fault(spark, mode):
        res = run_assign(spark, FAULT_CFG, tiny_blob, table=f"{db}.faulty", input_path=str(inp), warehouse=wh)
    assert res.rows_out == 300 and res.rows_rejected == 0
    pd.testing.assert_frame_equal(table_rows(spark, f"{db}.faulty", res.model_version),
                                  table_rows(spark, f"{db}.clean", clean.model_version))


def test_permanent_failure_keeps_the_previous_table(spark, tiny_blob, vectors, tmp_path, faults_shipped):
    inp = write_input(tmp_path / "in", list(range(300)), [list(map(float, v)) for v in vectors], files=2)
    wh = str(tmp_path / "wh")
    ok = run_assign(spark, FAULT_CFG, tiny_blob, table="fperm.perm", input_path=str(inp), warehouse=wh)
    before = table_rows(spark, "fperm.perm", ok.model_version)
    with fault(spark, "always_raise"), pytest.raises(Exception, match="injected permanent fault"):
        run_assign(spark, FAULT_CFG, tiny_blob, table="fperm.perm", input_path=str(inp), warehouse=wh,
                   run_id="doomed-run")
    pd.testing.assert_frame_equal(table_rows(spark, "fperm.perm", ok.model_version), before)
    statuses = {r.status for r in spark.table("fperm.perm_manifest").where("run_id = 'doomed-run'").collect()}
    assert statuses == {"running", "failed"}
    v = spark.table("fperm.perm_versions").first()
    assert (v.status, v.last_run_status, v.last_complete_at is not None) == ("partial", "failed", True)
    assert spark.table("fperm.perm_latest").count() == 300  # readers still get the last complete version


def test_unsafe_settings_are_refused(spark, tiny_blob, tmp_path):
    inp = write_input(tmp_path / "in", [1, 2], [[0.1] * 16, [0.2] * 16])
    spark.conf.set("spark.sql.files.ignoreCorruptFiles", "true")
    try:
        with pytest.raises(UnsafeSettingError, match="ignoreCorruptFiles: expected not true"):
            run_assign(spark, config(), tiny_blob, table="unsafe.t", input_path=str(inp), warehouse=str(tmp_path))
    finally:
        spark.conf.set("spark.sql.files.ignoreCorruptFiles", "false")
    hconf = spark.sparkContext._jsc.hadoopConfiguration()
    hconf.set("mapreduce.fileoutputcommitter.algorithm.version", "2")
    try:
        with pytest.raises(UnsafeSettingError, match="algorithm.version: expected not 2"):
            run_assign(spark, config(), tiny_blob, table="unsafe.t", input_path=str(inp), warehouse=str(tmp_path))
    finally:
        hconf.set("mapreduce.fileoutputcommitter.algorithm.version", "1")
    assert not spark.catalog.tableExists("unsafe.t")


def test_background_action_is_running_before_the_metastore_work_starts(spark):
    """run_assign starts the metastore work once the encode's first job exists (wait_started);
    an action that fails before it has a job must not leave that wait hanging."""
    sc = spark.sparkContext
    bg = Background(spark, "a job", lambda group: spark.range(0, 1000, 1, 2).selectExpr("sum(id)").collect())
    bg.wait_started()
    assert sc.statusTracker().getJobIdsForGroup(bg.group)
    bg.wait()

    def fails(group: str) -> None:
        raise ValueError("no job for this one")

    bg = Background(spark, "no job", fails)
    bg.wait_started()
    assert not sc.statusTracker().getJobIdsForGroup(bg.group)
    with pytest.raises(ValueError, match="no job for this one"):
        bg.wait()


def test_background_action_gets_its_group_at_once(spark):
    """The action may need its job group as its first step (the encode reports progress by
    it): the group is handed to it, never read from an object still being built."""
    for _ in range(20):
        bg = Background(spark, "group first", lambda group: group)
        assert bg.wait() == bg.group


def test_session_conf_is_restored(spark):
    key = "spark.sql.adaptive.enabled"
    before = spark.conf.get(key)
    with session_conf(spark, key, "false"):
        assert spark.conf.get(key) == "false"
    assert spark.conf.get(key) == before
    with pytest.raises(RuntimeError):
        with session_conf(spark, "spark.semid.test.unset", "x"):
            raise RuntimeError("body failed")
    assert spark.conf.get("spark.semid.test.unset", None) is None


def test_a_cancelled_background_action_has_no_task_left_running(spark):
    """A failed run cancels its encode and then writes its error as its last line: when cancel
    returns, none of the action's tasks still runs (Spark's lines about killed tasks come first)."""
    import time

    def slow(batches):
        for b in batches:
            time.sleep(30)
            yield b

    bg = Background(spark, "slow", lambda group: spark.range(0, 4, 1, 2).mapInPandas(slow, "id long").collect())
    bg.wait_started()
    tracker = spark.sparkContext.statusTracker()
    deadline = time.monotonic() + 60
    while not any(st.numActiveTasks for st in group_stages(tracker, bg.group)):  # its tasks are running
        assert time.monotonic() < deadline
        time.sleep(0.05)
    bg.cancel()
    assert not any(st.numActiveTasks for st in group_stages(tracker, bg.group))

