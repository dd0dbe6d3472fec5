"""Metastore tables stored as plain Parquet are read by the pyarrow reader in the tasks, from
the files the catalog names; what they publish (rows, IDs, rejects, counts) is what Spark's
reader gives. Other formats and views stay on Spark's reader."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from semid_udf.config import InputConfig
from semid_udf.errors import ConfigError
from semid_udf.paths import local_path
from semid_udf.spark.api import build
from semid_udf.spark.inputs import parquet_table_files, read_source
from semid_udf.table.publish import run_assign

from .conftest import clustered
from .spark_helpers import config


def source_rows(n: int = 240) -> pa.Table:
    """Good rows and every input reject: a null embedding, a wrong length, a NaN, a null element,
    a null id, and an id repeated with another embedding."""
    x = clustered(n, 16, seed=71)
    vecs: list = [list(map(float, v)) for v in x]
    vecs[3] = None
    vecs[4] = vecs[4][:-1]
    vecs[5] = [float("nan")] + vecs[5][1:]
    vecs[6] = [None] + vecs[6][1:]
    ids: list = list(range(n))
    ids[7] = None
    ids[8] = 9  # item 9 twice, with two embeddings: a duplicate conflict
    return pa.table({"item_id": pa.array(ids, pa.int64()), "embedding": pa.array(vecs, pa.list_(pa.float32())),
                     "day": pa.array([i % 3 for i in range(n)], pa.int32())})


@pytest.fixture(scope="session")  # once per worker: its tables live in the shared session
def tables(spark, tmp_path_factory):
    """The same rows as a data source Parquet table, a Hive Parquet table, one partitioned by
    a column that is neither the id nor the embedding, and an ORC table."""
    root = tmp_path_factory.mktemp("tables")
    pq.write_table(source_rows(), root / "rows.parquet")
    df = spark.read.parquet(str(root / "rows.parquet")).repartition(3)
    spark.sql(f"CREATE DATABASE IF NOT EXISTS tr LOCATION '{root / 'tr.db'}'")
    df.write.mode("overwrite").format("parquet").saveAsTable("tr.ds")
    df.write.mode("overwrite").format("parquet").partitionBy("day").saveAsTable("tr.parted")
    df.write.mode("overwrite").format("orc").saveAsTable("tr.orc")
    spark.sql("DROP TABLE IF EXISTS tr.hive")
    spark.sql("CREATE TABLE tr.hive (item_id BIGINT, embedding ARRAY<FLOAT>, day INT) STORED AS PARQUET")
    df.write.insertInto("tr.hive")
    return root


def ids_and_rejects(spark, ckpt, table: str, reader: str) -> tuple[list, list, dict]:
    """What semid makes of ``table`` with ``reader`` (``fetched``: pyarrow decodes the files
    Spark's binaryFile source fetched, as for a table on s3a://): ids, rejects (with their
    details) and counts per reason, as the job computes them before it writes."""
    ic = InputConfig(reader="arrow", fetch="spark") if reader == "fetched" else InputConfig(reader=reader)
    src = read_source(spark, ic, input_table=table)
    assert (src.plan is not None, src.fetched is not None) == (reader == "auto", reader == "fetched"), (table, reader)
    res = build(spark, src, ckpt, config())
    try:
        ids = sorted(tuple(r) for r in res.ids.select("item_id", "semantic_id", "embedding_hash").collect())
        rejects = sorted((tuple(r) for r in res.rejects.collect()), key=repr)  # a null id is a reject too
        return ids, rejects, dict(res.rejects_by_reason)
    finally:
        res.unpersist()


@pytest.mark.parametrize("table", ["tr.ds", "tr.hive", "tr.parted"])
def test_a_parquet_table_gives_the_ids_and_rejects_sparks_reader_does(spark, tiny_blob, tables, table):
    fast_src = read_source(spark, InputConfig(), input_table=table)
    assert fast_src.plan is not None and fast_src.rows == 240  # the pyarrow reader, rows from the footers
    assert {f[0] for f in fast_src.plan.files} == {local_path(f) for f in spark.table(table).inputFiles()}
    fast, slow = ids_and_rejects(spark, tiny_blob, table, "auto"), ids_and_rejects(spark, tiny_blob, table, "spark")
    assert fast == slow and len(fast[0]) == 240 - sum(fast[2].values())  # every row: an ID or a reject
    assert ids_and_rejects(spark, tiny_blob, table, "fetched") == slow
    assert set(fast[2]) == {"null_embedding", "wrong_length", "non_finite", "null_element", "null_item_id",
                            "duplicate_conflict"}


def test_a_parquet_table_publishes_what_sparks_reader_does(spark, tiny_blob, tables):
    """The whole job over a table: the same published rows, rejects and counts."""
    wh = str(tables / "wh")
    fast = run_assign(spark, config(), tiny_blob, table="trf.ds", input_table="tr.ds", warehouse=wh)
    slow = run_assign(spark, config(input={"reader": "spark"}), tiny_blob, table="trs.ds", input_table="tr.ds",
                      warehouse=wh)
    assert (fast.rows_in, fast.rows_out, fast.rows_rejected, fast.rejects_by_reason) == (
        slow.rows_in, slow.rows_out, slow.rows_rejected, slow.rejects_by_reason)

    def published(t: str) -> list:
        return sorted(tuple(r) for r in spark.table(t).select("item_id", "semantic_id", "embedding_hash").collect())

    def rejects(t: str) -> list:
        return sorted((tuple(r) for r in spark.table(f"{t}_rejects").select("item_id", "reason", "detail").collect()),
                      key=repr)

    assert published("trf.ds") == published("trs.ds") and len(published("trf.ds")) == fast.rows_out
    assert rejects("trf.ds") == rejects("trs.ds")


def test_other_formats_and_views_stay_on_sparks_reader(spark, tables):
    spark.sql("CREATE OR REPLACE VIEW tr.v AS SELECT * FROM tr.ds")
    for table in ("tr.orc", "tr.v"):
        src = read_source(spark, InputConfig(), input_table=table)
        assert src.plan is None and src.frame is not None, table
    with pytest.raises(ConfigError, match=r"input.reader=arrow: table tr.orc cannot be read with pyarrow: stored as "
                                          r"orc, not plain Parquet"):
        read_source(spark, InputConfig(reader="arrow"), input_table="tr.orc")


def test_a_partition_column_as_the_id_stays_on_sparks_reader(spark, tables):
    """A partition column is in the folder names, not in the files pyarrow would read."""
    files, why = parquet_table_files(spark, "tr.parted", ("day", "embedding"))
    assert files is None and why == "the id or embedding column is a partition column (['day'])"
    files, why = parquet_table_files(spark, "tr.parted", ("item_id", "embedding"))
    assert files is not None and why == ""
