"""The pyarrow input reader without Spark: planning, type rules, and reading units back."""
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from semid_udf.errors import InputError
from semid_udf.paths import is_local
from semid_udf.worker.reader import plan_input, read_unit


def write(path, ids, emb_type=pa.list_(pa.float32()), id_type=pa.int64(), dim=4, row_group_size=None, seed=0):
    x = np.random.default_rng(seed).standard_normal((len(ids), dim)).astype(np.float32)
    emb = pa.array(list(x), emb_type) if not pa.types.is_fixed_size_list(emb_type) else \
        pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), emb_type.value_type), dim)
    pq.write_table(pa.table({"item_id": pa.array(ids, id_type), "embedding": emb, "other": pa.array(ids, id_type)}),
                   path, row_group_size=row_group_size)
    return x


def read_all(plan, batch=7, dim=None):
    """Every row the plan's units give, the vectors as the encode step reads them (float32)."""
    from semid_udf.vectors import RowChecks, embedding_rows

    ids, vecs = [], []
    for unit in plan.units:
        for b in read_unit(plan, unit, batch):
            assert b.schema.names == ["item_id", "embedding"]
            ids += b.column(0).to_pylist()
            checks = RowChecks(b.num_rows)
            rows, mat = embedding_rows(b.column(1), dim or len(b.column(1)[0]), checks, plan.binary_dtype)
            assert len(rows) == b.num_rows, checks.reasons
            vecs.append(mat)
    return ids, np.concatenate(vecs)


def test_plan_splits_by_row_groups_and_reads_every_row_once(tmp_path):
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    x1 = write(d / "a.parquet", list(range(0, 50)), row_group_size=10)
    x2 = write(d / "sub" / "b.parquet", list(range(50, 80)), row_group_size=30, seed=1)
    (d / "_SUCCESS").write_text("")
    (d / ".a.parquet.crc").write_text("not parquet")
    (d / "_temporary").mkdir()
    (d / "_temporary" / "junk.parquet").write_text("not parquet")
    plan = plan_input(str(d), "item_id", "embedding", True, target_bytes=1)  # one row group per unit
    assert plan.rows == 80 and plan.id_type == pa.int64()
    assert [u.rows for u in plan.units] == [10] * 5 + [30]
    assert [p for p, _, _ in plan.files] == [str(d / "a.parquet"), str(d / "sub" / "b.parquet")]
    ids, vecs = read_all(plan)
    assert ids == list(range(80))
    np.testing.assert_array_equal(vecs, np.vstack([x1, x2]))
    big = plan_input(str(d), "item_id", "embedding", True)  # default target: small files share one task
    assert len(big.units) == 1 and [(p.path, p.row_groups) for p in big.units[0].parts] == [
        (str(d / "a.parquet"), (0, 1, 2, 3, 4)), (str(d / "sub" / "b.parquet"), (0,))]
    assert read_all(big)[0] == list(range(80))


def test_many_small_files_are_packed_and_big_ones_split(tmp_path):
    for i in range(30):
        write(tmp_path / f"f{i:02d}.parquet", [i], row_group_size=1)
    plan = plan_input(str(tmp_path), "item_id", "embedding", True, target_bytes=10 << 20)  # each file counts 4 MB
    assert [len(u.parts) for u in plan.units] == [2] * 15  # 2 files per 10 MB task, as Spark packs splits
    assert read_all(plan)[0] == list(range(30))


def test_a_small_input_still_gives_every_core_a_task(tmp_path):
    for i in range(4):  # four small files: one 128 MB task would leave the other cores idle
        write(tmp_path / f"f{i}.parquet", list(range(i * 100, i * 100 + 100)), dim=64)
    assert len(plan_input(str(tmp_path), "item_id", "embedding", True).units) == 1
    plan = plan_input(str(tmp_path), "item_id", "embedding", True, cores=2)
    assert [len(u.parts) for u in plan.units] == [2, 2]  # input / cores per task, as Spark sizes splits
    assert read_all(plan)[0] == list(range(400))


@pytest.mark.parametrize("emb_type", [pa.list_(pa.float64()), pa.large_list(pa.float32()),
                                      pa.list_(pa.float32(), 4)])
def test_other_list_types_give_their_float32_values(tmp_path, emb_type):
    x = write(tmp_path / "a.parquet", [1, 2, 3], emb_type=emb_type)
    ids, vecs = read_all(plan_input(str(tmp_path / "a.parquet"), "item_id", "embedding", True))
    assert ids == [1, 2, 3]
    np.testing.assert_array_equal(vecs, x)  # float64 -> float32 rounds like Spark's cast


def test_double_overflow_becomes_inf_like_spark_and_is_rejected(tmp_path):
    from semid_udf.vectors import RowChecks, embedding_rows

    pq.write_table(pa.table({"item_id": [1], "embedding": pa.array([[1e300, 0.5]], pa.list_(pa.float64()))}),
                   tmp_path / "a.parquet")
    plan = plan_input(str(tmp_path), "item_id", "embedding", True)
    (b,) = read_unit(plan, plan.units[0], 10)
    checks = RowChecks(1)
    rows, _ = embedding_rows(b.column(1), 2, checks)
    assert len(rows) == 0 and checks.reasons == ["non_finite"]  # cast to Inf as Spark casts, never clipped
    assert checks.details == ["1 NaN/Inf value(s) of 2, first at index 0"]


def test_id_types_are_widened_or_refused(tmp_path):
    write(tmp_path / "a.parquet", [1, 2], id_type=pa.int32())
    write(tmp_path / "b.parquet", [3, 4], id_type=pa.int64())
    plan = plan_input(str(tmp_path), "item_id", "embedding", True)
    assert plan.id_type == pa.int64() and read_all(plan)[0] == [1, 2, 3, 4]
    write(tmp_path / "c.parquet", ["x"], id_type=pa.string())
    with pytest.raises(InputError, match=r"expected one type in every file, got string \(e.g. .*c.parquet\) and "
                                         r"integers \(e.g. .*a.parquet\)"):
        plan_input(str(tmp_path), "item_id", "embedding", True)


@pytest.mark.parametrize("ids, expected_type", [
    (pa.array([3, 4], pa.uint32()), pa.int64()), (pa.array([3, 4], pa.int16()), pa.int32()),
    (pa.array(["a", "b"]).dictionary_encode(), pa.string()),
])
def test_id_types_spark_reads_as_int_bigint_or_string(tmp_path, ids, expected_type):
    pq.write_table(pa.table({"item_id": ids, "embedding": pa.array([[1.0], [2.0]], pa.list_(pa.float32()))}),
                   tmp_path / "a.parquet")
    plan = plan_input(str(tmp_path), "item_id", "embedding", True)
    assert plan.id_type == expected_type
    assert read_all(plan)[0] == pa.array(ids).cast(expected_type).to_pylist()


@pytest.mark.parametrize("table, message", [
    (pa.table({"item_id": [1], "vec": [[1.0]]}), r"column 'embedding' \(the embedding\) missing; columns found: "
                                                 r"\['item_id', 'vec'\] \(file .*a.parquet\)"),
    (pa.table({"item_id": [1.5], "embedding": [[1.0]]}), "column 'item_id': expected bigint, int or string, got double"),
    (pa.table({"item_id": pa.array([1], pa.uint64()), "embedding": [[1.0]]}),
     "column 'item_id': expected bigint, int or string, got uint64"),
    (pa.table({"item_id": [1], "embedding": [["a"]]}), r"expected array<float> \(or array<double>, .*\), got "
                                                       r"array<string> \(file .*a.parquet\)"),
    (pa.table({"item_id": [1], "embedding": [1.0]}), r"expected array<float> \(or array<double>, .*\), got double"),
    (pa.table({"item_id": [1], "embedding": [b"\0\0\0\0"]}), r"input.binary_dtype one of float32, float16, float64, "
                                                             r"got none \(file .*a.parquet\)"),
])
def test_bad_schemas_name_file_column_expected_actual(tmp_path, table, message):
    pq.write_table(table, tmp_path / "a.parquet")
    with pytest.raises(InputError, match=message):
        plan_input(str(tmp_path), "item_id", "embedding", True)


def test_double_refused_without_cast_double(tmp_path):
    write(tmp_path / "a.parquet", [1], emb_type=pa.list_(pa.float64()))
    with pytest.raises(InputError, match=r"got array<double> \(input.cast_double is false\)"):
        plan_input(str(tmp_path), "item_id", "embedding", False)


def test_missing_empty_and_unreadable_inputs(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        plan_input(str(tmp_path / "nope"), "item_id", "embedding", True)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "_SUCCESS").write_text("")
    with pytest.raises(InputError, match="expected Parquet files, found none"):
        plan_input(str(tmp_path / "empty"), "item_id", "embedding", True)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "part-9.parquet").write_bytes(b"PAR1 not parquet PAR1")
    with pytest.raises(InputError, match=r"input file .*part-9.parquet: cannot read it as Parquet"):
        plan_input(str(tmp_path / "bad"), "item_id", "embedding", True)


def test_a_file_replaced_after_planning_fails_the_read(tmp_path):
    write(tmp_path / "a.parquet", list(range(20)))
    plan = plan_input(str(tmp_path), "item_id", "embedding", True)
    write(tmp_path / "a.parquet", list(range(25)))
    with pytest.raises(InputError, match="changed while the job ran"):
        read_all(plan)


def test_local_paths():
    assert is_local("/data/x") and is_local("rel/x") and is_local("file:/data/x") and is_local("file:///data/x")
    assert not any(map(is_local, ["s3a://b/x", "hdfs://nn/x", "dbfs:/x", "gs://b/x", "abfss://c@a/x"]))


def fetch_plan(path, id_type=pa.int64()):
    from semid_udf.worker.reader import FetchPlan

    st = path.stat()
    return FetchPlan(str(path), ((str(path), st.st_size, st.st_mtime_ns // 1000),), id_type, "item_id", "embedding",
                     True)


def test_a_fetched_file_gives_the_rows_pyarrow_reads_from_the_path(tmp_path):
    """Spark's binaryFile hands a task the file's bytes; decoded, they are the planned read's rows."""
    from semid_udf.worker.reader import read_fetched

    x = write(tmp_path / "a.parquet", list(range(30)), emb_type=pa.list_(pa.float64()), row_group_size=8)
    plan = fetch_plan(tmp_path / "a.parquet")
    (path, size, mtime), = plan.files
    batches = list(read_fetched(plan, path, size, mtime, (tmp_path / "a.parquet").read_bytes(), 7))
    assert [b.num_rows for b in batches] == [7, 7, 7, 7, 2]
    assert sum((b.column(0).to_pylist() for b in batches), []) == list(range(30))
    got = np.concatenate([np.asarray(b.column(1).to_pylist(), np.float64) for b in batches])
    np.testing.assert_array_equal(got.astype(np.float32), x)
    assert read_all(plan_input(str(tmp_path), "item_id", "embedding", True))[0] == list(range(30))


def test_a_fetched_file_that_is_not_the_listed_one_fails_naming_it(tmp_path):
    from semid_udf.worker.reader import read_fetched

    write(tmp_path / "a.parquet", list(range(20)))
    plan = fetch_plan(tmp_path / "a.parquet")
    (path, size, mtime), = plan.files
    data = (tmp_path / "a.parquet").read_bytes()
    for got_size, got_mtime, content in ((size + 9, mtime, data), (size, mtime + 1000, data), (size, mtime, data[:-5])):
        with pytest.raises(InputError, match=f"input file {path}: expected {size} bytes modified at 20.* \\(as listed "
                                             "when the job started\\), got .*: it changed while the job ran"):
            list(read_fetched(plan, path, got_size, got_mtime, content, 7))
    with pytest.raises(InputError, match="expected one of the 1 files listed when the job started"):
        list(read_fetched(plan, str(tmp_path / "b.parquet"), size, mtime, data, 7))
    with pytest.raises(InputError, match=r"input file .*: cannot read it as Parquet"):
        list(read_fetched(plan, path, size, mtime, b"PAR1" + b"x" * (size - 8) + b"PAR1", 7))
    strings = fetch_plan(tmp_path / "a.parquet", id_type=pa.string())
    with pytest.raises(InputError, match=r"column 'item_id': expected string \(as planned from the input's schema\), "
                                         r"got int64 \(file .*a.parquet\)"):
        list(read_fetched(strings, path, size, mtime, data, 7))
