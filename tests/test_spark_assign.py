"""The assign job in the shared local[2] session: contract, determinism, rejects, errors."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from semid_udf.config import EncodeConfig, PluginConfig
from semid_udf.model.encode import CodeEncoder
from semid_udf.errors import InputError
from semid_udf.spark.ids import bucket_shifts, bucket_stats, with_suffix
from semid_udf.table.publish import run_assign

from .conftest import clustered
from .spark_helpers import config, table_rows, write_input

N = 400


@pytest.fixture(scope="session")  # for the session-scoped fixture that uses it
def data(tmp_path_factory):
    x = clustered(N, 16, seed=21, centers=8)  # few clusters: collisions, so suffixes matter
    ids = list(range(5000, 5000 + N))
    path = write_input(tmp_path_factory.mktemp("in") / "emb", ids, [list(map(float, v)) for v in x], files=3)
    return ids, x, path


@pytest.fixture(scope="session")  # once per worker: its tables live in the shared session
def published(spark, tiny_blob, data, tmp_path_factory):
    ids, x, path = data
    wh = tmp_path_factory.mktemp("wh")
    res = run_assign(spark, config(), tiny_blob, table="contract.sids", input_path=str(path), warehouse=str(wh))
    return res, wh


def test_table_matches_the_contract(spark, published):
    res, _ = published
    fields = [(f.name, f.dataType.simpleString()) for f in spark.table("contract.sids").schema.fields]
    assert fields == [("item_id", "bigint"), ("sid_0", "int"), ("sid_1", "int"), ("sid_2", "int"),
                      ("sid_suffix", "int"), ("semantic_id", "string"), ("embedding_hash", "bigint"),
                      ("run_id", "string"), ("model_version", "string")]
    parts = [r[0] for r in spark.sql("SHOW PARTITIONS contract.sids_data").collect()]
    assert parts == [f"model_version={res.model_version}/run_id={res.run_id}"]
    rej = [f.name for f in spark.table("contract.sids_rejects").schema.fields]
    assert rej == ["item_id", "reason", "detail", "model_version", "run_id"]


def test_ids_unique_codes_equal_pure_encode_and_suffixes_ordered(spark, tiny_blob, data, published):
    ids, x, _ = data
    res, _ = published
    df = table_rows(spark, "contract.sids", res.model_version)
    assert len(df) == N and df.item_id.is_unique and df.semantic_id.is_unique
    expected = CodeEncoder(tiny_blob, EncodeConfig(), PluginConfig())(x)
    np.testing.assert_array_equal(df[["sid_0", "sid_1", "sid_2"]].to_numpy(), expected)
    assert (df.semantic_id == df[["sid_0", "sid_1", "sid_2", "sid_suffix"]].astype(str).agg("-".join, axis=1)).all()
    for _, g in df.groupby(["sid_0", "sid_1", "sid_2"]):
        assert g.sort_values("item_id").sid_suffix.tolist() == list(range(len(g)))
    assert df.sid_suffix.max() > 0  # the fixture collides, so the suffix was exercised


def test_bucket_statistics_describe_the_table(spark, tiny_blob, published):
    """Observed while writing (full mode) = computed from the table = the job that append mode runs."""
    res, _ = published
    df = table_rows(spark, "contract.sids", res.model_version)
    sizes = df.groupby(["sid_0", "sid_1", "sid_2"]).size()
    hist: dict[str, int] = {}
    for size in sorted(sizes):
        upto = 1 << max(0, int(size - 1).bit_length())
        hist[f"<={upto}"] = hist.get(f"<={upto}", 0) + 1
    expected = {"buckets": len(sizes), "largest_bucket": int(sizes.max()),
                "unique_rate_before_suffix": round(len(sizes) / N, 6), "bucket_size_histogram": hist}
    assert res.buckets == expected and expected["largest_bucket"] > 1
    codes = spark.table("contract.sids").where(f"model_version = '{res.model_version}'")
    assert bucket_stats(codes, 3, int(tiny_blob.model["codebook_size"]), N) == expected


def test_bucket_cap_refuses_to_publish(spark, tiny_blob, data, published):
    res, wh = published
    with pytest.raises(InputError, match=r"bucket size: expected at most 1 items per code tuple .* got [1-9][0-9]*$"):
        run_assign(spark, config(output={"max_bucket_size": 1}), tiny_blob, table="contract.capped",
                   input_path=str(data[2]), warehouse=str(wh))
    assert spark.table("contract.capped").count() == 0


def test_suffix_is_the_same_when_codes_are_too_wide_to_pack(spark, published):
    """with_suffix groups by the packed key, or by the code columns when they need > 63 bits."""
    res, _ = published
    kept = spark.table("contract.sids").where(f"model_version = '{res.model_version}'").select(
        "item_id", "sid_0", "sid_1", "sid_2")
    assert bucket_shifts(3, 2**22) is None and bucket_shifts(3, 256) is not None
    wide = with_suffix(kept, 3, 2**22, 2).toPandas().sort_values("item_id").reset_index(drop=True)
    packed = with_suffix(kept, 3, 256, 2).toPandas().sort_values("item_id").reset_index(drop=True)
    assert list(wide.columns) == list(packed.columns) == ["item_id", "sid_0", "sid_1", "sid_2", "sid_suffix"]
    pd.testing.assert_frame_equal(wide, packed)
    stored = table_rows(spark, "contract.sids", res.model_version)
    assert wide.sid_suffix.tolist() == stored.sid_suffix.tolist()


def test_manifest_complete_and_counts_reconcile(spark, published):
    res, _ = published
    m = spark.table("contract.sids_manifest").where(f"run_id = '{res.run_id}'").toPandas()
    assert sorted(m.status) == ["complete", "running"]
    done = m[m.status == "complete"].iloc[0]
    assert done.rows_in == N == done.rows_out + done.rows_rejected and done.rows_rejected == 0


def test_rerun_gives_the_same_table(spark, tiny_blob, data, published):
    res, wh = published
    before = table_rows(spark, "contract.sids", res.model_version)
    again = run_assign(spark, config(), tiny_blob, table="contract.sids", input_path=str(data[2]), warehouse=str(wh))
    after = table_rows(spark, "contract.sids", res.model_version)
    pd.testing.assert_frame_equal(before, after)
    assert again.rows_out == N


@pytest.mark.parametrize("batch, parts", [(1, 2), (7, 3), (10000, 1), (128, 7)])
def test_same_ids_whatever_the_batching_and_partitioning(spark, tiny_blob, data, published, batch, parts):
    res, wh = published
    spark.read.parquet(str(data[2])).repartition(parts).createOrReplaceTempView("emb_view")
    cfg = config(output={"arrow_batch": batch})
    name = f"contract.sids_b{batch}_p{parts}"
    run_assign(spark, cfg, tiny_blob, table=name, input_table="emb_view", warehouse=str(wh))
    pd.testing.assert_frame_equal(table_rows(spark, name, res.model_version),
                                  table_rows(spark, "contract.sids", res.model_version))


@pytest.mark.parametrize("batch, row_group", [(1, 17), (100, 400)])
def test_same_ids_whatever_the_read_units(spark, tiny_blob, data, published, tmp_path, caplog, batch, row_group):
    """The pyarrow reader: one task per row group (17 rows) or per file, any batch size."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    res, wh = published
    caplog.set_level("INFO", logger="semid_udf")
    inp = tmp_path / "regrouped"
    inp.mkdir()
    pq.write_table(ds.dataset(str(data[2])).to_table(), inp / "all.parquet", row_group_size=row_group)
    spark.conf.set("spark.sql.files.maxPartitionBytes", "64k")  # under one file's open cost: each row group its own task
    try:
        name = f"contract.sids_rg{row_group}_b{batch}"
        run_assign(spark, config(output={"arrow_batch": batch}), tiny_blob, table=name, input_path=str(inp),
                   warehouse=str(wh))
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
    assert f"{N} rows in 1 files, {-(-N // row_group)} read tasks" in caplog.text
    pd.testing.assert_frame_equal(table_rows(spark, name, res.model_version),
                                  table_rows(spark, "contract.sids", res.model_version))


@pytest.mark.parametrize("reader", ["auto", "fetched", "spark"])
def test_bad_rows_are_rejected_with_reasons(spark, tiny_blob, tmp_path, reader):
    x = clustered(40, 16, seed=3)
    vecs = [list(map(float, v)) for v in x]
    ids = list(range(40))
    ids[0] = None                                   # null_item_id
    vecs[1] = None                                  # null_embedding
    vecs[2] = vecs[2][:10]                          # wrong_length
    vecs[3] = vecs[3][:4] + [None] + vecs[3][5:]    # null_element
    vecs[4] = vecs[4][:6] + [float("nan")] + vecs[4][7:]
    vecs[5] = vecs[5][:6] + [float("-inf")] + vecs[5][7:]
    ids += [10, 11, 11]                             # 10: identical copy; 11: three copies, one differs
    vecs += [vecs[10], vecs[11], [v + 1.0 for v in vecs[11]]]
    path = write_input(tmp_path / "bad", ids, vecs)
    how = {"reader": "arrow", "fetch": "spark"} if reader == "fetched" else {"reader": reader}  # fetched: binaryFile
    cfg = config(output={"max_reject_rate": 0.5}, input=how)
    name = f"bad_{reader}.sids"
    res = run_assign(spark, cfg, tiny_blob, table=name, input_path=str(path), warehouse=str(tmp_path / "wh"))
    assert res.rows_in == 43 and res.rows_in == res.rows_out + res.rows_rejected
    assert res.rejects_by_reason == {"duplicate_conflict": 3, "duplicate_identical": 1, "non_finite": 2,
                                     "null_element": 1, "null_embedding": 1, "null_item_id": 1, "wrong_length": 1}
    rej = spark.table(f"{name}_rejects").where(f"run_id = '{res.run_id}'").toPandas().set_index("reason")
    assert rej.loc["wrong_length", "detail"] == "embedding: expected length 16, got 10"
    assert rej.loc["null_element", "item_id"] == "3" and "first at index 4" in rej.loc["null_element", "detail"]
    out = spark.table(name).toPandas()
    assert sorted(out.item_id) == [i for i in range(6, 40) if i != 11]
    assert out.item_id.is_unique


def test_structural_errors_fail_before_writing(spark, tiny_blob, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    wh = str(tmp_path / "wh")
    p = tmp_path / "noemb"
    p.mkdir()
    pq.write_table(pa.table({"item_id": [1, 2], "vec": [[1.0], [2.0]]}), p / "a.parquet")
    with pytest.raises(InputError, match=r"column 'embedding' \(the embedding\) missing; columns found: \['item_id', 'vec'\]"):
        run_assign(spark, config(), tiny_blob, table="err.a", input_path=str(p), warehouse=wh)
    p2 = tmp_path / "strings"
    p2.mkdir()
    pq.write_table(pa.table({"item_id": [1], "embedding": [["a"]]}), p2 / "a.parquet")
    with pytest.raises(InputError, match="expected array<float> \\(or array<double>, .*\\), got array<string>"):
        run_assign(spark, config(), tiny_blob, table="err.b", input_path=str(p2), warehouse=wh)
    short = write_input(tmp_path / "short", [1, 2, 3], [[0.5] * 8] * 3)
    with pytest.raises(InputError, match="expected length 16, got 8 for every row"):
        run_assign(spark, config(), tiny_blob, table="err.c", input_path=str(short), warehouse=wh)
    assert spark.table("err.c").count() == 0
    statuses = [r.status for r in spark.table("err.c_manifest").collect()]
    assert "complete" not in statuses and "failed" in statuses


def test_an_unreadable_file_fails_with_its_name(spark, tiny_blob, tmp_path):
    from semid_udf.errors import one_line

    inp = write_input(tmp_path / "in", [1, 2, 3], [[0.1] * 16] * 3, files=1)
    (inp / "part-9.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
    with pytest.raises(Exception) as e:
        run_assign(spark, config(), tiny_blob, table="unread.t", input_path=str(inp), warehouse=str(tmp_path / "wh"))
    msg = one_line(e.value)
    assert "part-9.parquet" in msg and "\n" not in msg


@pytest.mark.parametrize("defect, reason", [
    ("null_id", "null_item_id"), ("null_vec", "null_embedding"), ("short", "wrong_length"),
    ("null_elem", "null_element"), ("nan", "non_finite"), ("inf", "non_finite"), ("dup_same", "duplicate_identical"),
    ("dup_diff", "duplicate_conflict"),
])
def test_each_defect_alone(spark, tiny_blob, tmp_path, defect, reason):
    x = clustered(20, 16, seed=5)
    ids, vecs = list(range(20)), [list(map(float, v)) for v in x]
    bad = {"null_id": lambda: ids.__setitem__(0, None), "null_vec": lambda: vecs.__setitem__(0, None),
           "short": lambda: vecs.__setitem__(0, vecs[0][:3]),
           "null_elem": lambda: vecs.__setitem__(0, [None] + vecs[0][1:]),
           "nan": lambda: vecs.__setitem__(0, [float("nan")] + vecs[0][1:]),
           "inf": lambda: vecs.__setitem__(0, [float("inf")] + vecs[0][1:]),
           "dup_same": lambda: (ids.append(0), vecs.append(vecs[0])),
           "dup_diff": lambda: (ids.append(0), vecs.append([v + 1 for v in vecs[0]]))}
    bad[defect]()
    inp = write_input(tmp_path / "in", ids, vecs, files=1)
    res = run_assign(spark, config(output={"max_reject_rate": 0.2}), tiny_blob, table=f"alone_{defect}.t",
                     input_path=str(inp), warehouse=str(tmp_path / "wh"))
    expected = {reason: 2 if defect == "dup_diff" else 1}
    assert res.rejects_by_reason == expected
    assert res.rows_in == len(ids) == res.rows_out + res.rows_rejected


@pytest.mark.parametrize("reader", ["auto", "spark"])
def test_small_integer_ids_are_widened_by_both_readers(spark, tiny_blob, tmp_path, reader):
    import pyarrow as pa

    x = clustered(30, 16, seed=8)
    inp = write_input(tmp_path / "in", list(range(30)), [list(map(float, v)) for v in x], files=1, id_type=pa.int16())
    name = f"small_{reader}.t"
    res = run_assign(spark, config(input={"reader": reader}), tiny_blob, table=name, input_path=str(inp),
                     warehouse=str(tmp_path / "wh"))
    assert res.rows_out == 30
    assert spark.table(name).schema["item_id"].dataType.simpleString() == "int"


def test_a_three_part_name_with_an_unknown_catalog_is_refused_listing_the_catalogs(spark, tiny_blob, tmp_path):
    from semid_udf.errors import ConfigError

    inp = write_input(tmp_path / "in", [1, 2, 3], [[0.1] * 16] * 3, files=1)
    with pytest.raises(ConfigError, match=r"--table nocat.db.t: expected a catalog this session has \(spark_catalog.*"
                                          r"got 'nocat'"):
        run_assign(spark, config(), tiny_blob, table="nocat.db.t", input_path=str(inp), warehouse=str(tmp_path / "wh"))
    assert not spark.catalog.databaseExists("db")
