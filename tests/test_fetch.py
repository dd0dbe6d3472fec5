"""input.fetch=spark: Spark's binaryFile source fetches whole Parquet files (any URI Spark can
read, with its credentials) and pyarrow decodes them in the tasks. Here on local files forced
through that path; the rows, rejects and IDs equal Spark's reader's (also checked per column
type in test_api.py, for tables in test_table_reader.py, for rejects in test_spark_assign.py)."""
from __future__ import annotations

import re

import pytest

from semid_udf.config import InputConfig
from semid_udf.errors import ConfigError, one_line
from semid_udf.spark.api import build
from semid_udf.spark.inputs import fetcher, read_source
from semid_udf.table.publish import run_assign

from .conftest import clustered
from .spark_helpers import config, table_rows, write_input

FETCHED = {"reader": "arrow", "fetch": "spark"}


@pytest.mark.parametrize("fetch, local, expected", [
    ("auto", True, "pyarrow"), ("auto", False, "spark"),
    ("pyarrow", True, "pyarrow"), ("pyarrow", False, "pyarrow"),
    ("spark", True, "spark"), ("spark", False, "spark"),
])
def test_who_opens_the_files(fetch, local, expected):
    assert fetcher(InputConfig(fetch=fetch), local) == expected


def test_an_unknown_fetch_and_a_bound_out_of_range_are_refused():
    with pytest.raises(ConfigError, match=r"input.fetch"):
        InputConfig(fetch="hdfs").validate()
    with pytest.raises(ConfigError, match=r"input.fetch_max_file_mb: expected 1 to 2047, got 4096"):
        InputConfig(fetch_max_file_mb=4096).validate()


def test_sharded_fetched_files_publish_what_sparks_reader_does(spark, tiny_blob, tmp_path):
    """Shards of a fetched input are sets of files; together they are the whole input."""
    x = clustered(90, 16, seed=41)
    inp = write_input(tmp_path / "in", list(range(90)), [list(map(float, v)) for v in x], files=5)
    wh = str(tmp_path / "wh")
    res = run_assign(spark, config(input=FETCHED, output={"shards": 3}), tiny_blob, table="fetch.sharded",
                     input_path=inp.as_uri(), warehouse=wh)
    ref = run_assign(spark, config(input={"reader": "spark"}), tiny_blob, table="fetch.ref", input_path=str(inp),
                     warehouse=wh)
    assert res.rows_in == res.rows_out == ref.rows_out == 90
    got, want = table_rows(spark, "fetch.sharded", res.model_version), table_rows(spark, "fetch.ref", ref.model_version)
    assert got.drop(columns=["run_id"], errors="ignore").equals(want.drop(columns=["run_id"], errors="ignore"))


def test_a_file_changed_after_listing_fails_the_task_naming_it(spark, tiny_blob, tmp_path):
    x = clustered(40, 16, seed=42)
    inp = write_input(tmp_path / "in", list(range(40)), [list(map(float, v)) for v in x], files=2)
    src = read_source(spark, InputConfig(**FETCHED), input_path=str(inp))
    assert src.fetched is not None and src.rows == 40
    write_input(tmp_path / "in", list(range(50)), [list(map(float, v)) for v in clustered(50, 16, seed=43)], files=2)
    with pytest.raises(Exception) as e:
        build(spark, src, tiny_blob, config()).unpersist()
    msg = one_line(e.value)
    assert re.search(r"input file file:\S+/part-[01].parquet: expected \d+ bytes modified at 20\S+ \(as listed when "
                     r"the job started\), got \d+ bytes modified at 20\S+: it changed while the job ran", msg), msg


def test_a_file_over_the_bound_goes_to_sparks_reader_or_fails_when_arrow_is_asked(spark, tmp_path, caplog):
    big = clustered(20000, 16, seed=45)  # one file over the least bound, 1 MB
    inp = write_input(tmp_path / "in", list(range(20000)), [list(map(float, v)) for v in big], files=1)
    assert (inp / "part-0.parquet").stat().st_size > 1 << 20
    with pytest.raises(ConfigError, match=r"input.fetch=spark: file .*part-0.parquet has 1 MB, over "
                                          r"input.fetch_max_file_mb=1 \(a task holds a fetched file whole\); raise "
                                          r"the limit \(at most 2047\), or use input.reader=spark"):
        read_source(spark, InputConfig(**FETCHED, fetch_max_file_mb=1), input_path=str(inp))
    caplog.set_level("INFO", logger="semid_udf")
    src = read_source(spark, InputConfig(fetch="spark", fetch_max_file_mb=1), input_path=str(inp))  # reader=auto
    assert src.fetched is None and src.frame is not None and src.rows == 20000
    assert "reader: Spark for" in caplog.text and "over input.fetch_max_file_mb=1" in caplog.text


@pytest.mark.parametrize("files, slots, largest, expected", [
    (5, 2, 309 << 20, 2),     # five big files on two cores: ten tasks, no idle core in the last wave
    (1, 2, 1 << 30, 4),       # one big file: four tasks, at most
    (8, 2, 309 << 20, 1),     # four files per slot already
    (24, 2, 128 << 20, 1),
    (3, 2, 10 << 20, 1),      # small files: not worth a second fetch
    (100, 64, 128 << 20, 3),
])
def test_a_few_big_fetched_files_are_shared_by_several_tasks(files, slots, largest, expected):
    from semid_udf.spark.inputs import fetch_shares

    assert fetch_shares(files, slots, largest) == expected


def test_shares_of_a_fetched_file_read_each_row_group_once(tmp_path):
    """Share j of k decodes row groups j, j + k, ...: together every row, once."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from semid_udf.worker.reader import FetchPlan, read_fetched

    ids = list(range(95))
    pq.write_table(pa.table({"item_id": pa.array(ids, pa.int64()),
                             "embedding": pa.array([[float(i)] * 4 for i in ids], pa.list_(pa.float32()))}),
                   tmp_path / "a.parquet", row_group_size=10)
    st = (tmp_path / "a.parquet").stat()
    data = (tmp_path / "a.parquet").read_bytes()
    for k in (1, 2, 3, 4, 12):
        plan = FetchPlan("x", ((str(tmp_path / "a.parquet"), st.st_size, st.st_mtime_ns // 1000),), pa.int64(),
                         "item_id", "embedding", True, shares=k)
        got = [i for j in range(k) for b in read_fetched(plan, plan.files[0][0], st.st_size, st.st_mtime_ns // 1000,
                                                          data, 7, j) for i in b.column(0).to_pylist()]
        assert sorted(got) == ids, k


def test_fetched_files_shared_by_several_tasks_give_sparks_ids(spark, tiny_blob, tmp_path, monkeypatch, caplog):
    """Two files on two slots: each file fetched by four tasks, each decoding its share of the
    row groups; the same IDs and rejects as Spark's reader."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from semid_udf.spark import inputs

    monkeypatch.setattr(inputs, "SHARE_MIN_BYTES", 0)  # the test's files are small
    x = clustered(80, 16, seed=46)
    vecs: list = [list(map(float, v)) for v in x]
    vecs[3] = None
    (tmp_path / "in").mkdir()
    for k in range(2):
        rows = range(40 * k, 40 * k + 40)
        pq.write_table(pa.table({"item_id": pa.array(list(rows), pa.int64()),
                                 "embedding": pa.array([vecs[i] for i in rows], pa.list_(pa.float32()))}),
                       tmp_path / "in" / f"part-{k}.parquet", row_group_size=6)
    caplog.set_level("INFO", logger="semid_udf")

    def ids(ic: InputConfig) -> tuple[list, list]:
        res = build(spark, read_source(spark, ic, input_path=str(tmp_path / "in")), tiny_blob, config())
        try:
            return (sorted(tuple(r) for r in res.ids.select("item_id", "semantic_id", "embedding_hash").collect()),
                    sorted(tuple(r) for r in res.rejects.select("item_id", "reason").collect()))
        finally:
            res.unpersist()

    shared = ids(InputConfig(**FETCHED))
    assert "(2 files, 80 rows, largest 0 MB, 4 task(s) per file)" in caplog.text
    assert shared == ids(InputConfig(reader="spark")) and len(shared[0]) == 79 and shared[1] == [("3", "null_embedding")]
