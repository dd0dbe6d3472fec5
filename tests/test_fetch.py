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
