"""The public API: the README's examples on a classic and a Spark Connect session give the
job's codes; every embedding column type gives the same IDs through the UDF and both
readers; the model is built once per Python worker."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from semid_udf import read_checkpoint, semantic_codes, semantic_ids
from semid_udf.table.publish import run_assign

from .conftest import ROOT, clustered
from .spark_helpers import config, published_files, write_input

N = 300


def readme_block(kind: str) -> str:
    found = re.findall(rf"```python {kind}\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert len(found) == 1, f"expected one ```python {kind} block in README.md"
    return found[0]


@pytest.fixture(scope="session")  # once per worker: its tables live in the shared session
def catalogue(spark, tiny_checkpoint, tmp_path_factory):
    """ckpt/ and emb/ as the README names them (two bad rows among N), and the job's table."""
    root = tmp_path_factory.mktemp("api")
    shutil.copytree(tiny_checkpoint, root / "ckpt")
    vecs = [list(map(float, v)) for v in clustered(N, 16, seed=81)]
    vecs[7] = None
    vecs[9] = vecs[9][:5]
    write_input(root / "emb", list(range(N)), vecs, files=3)
    res = run_assign(spark, config(), read_checkpoint(root / "ckpt"), table="api.ids", input_path=str(root / "emb"),
                     warehouse=str(root / "wh"))
    rejects = {r["item_id"]: r["reason"] for r in spark.table("api.ids_rejects").where(
        f"run_id = '{res.run_id}'").collect()}
    return root, published_files(root / "wh", "api.ids"), rejects


def readme_example(root) -> str:
    code = readme_block("api")
    for rel in ("ckpt/", "emb/", "my_ids/"):  # a Connect server resolves relative paths in its own directory
        code = code.replace(f'"{rel}"', repr(str(root / rel) + "/"))
    return code


# The example run by a Spark Connect client: a process of its own with no JVM, as a
# Databricks serverless notebook is; what it computed comes back as JSON.
CLIENT = """
import json, sys
from pyspark.sql import SparkSession
spark = SparkSession.builder.getOrCreate()  # SPARK_REMOTE: a Connect client
ns = {"spark": spark}
exec(open(sys.argv[1]).read(), ns)
out = {"coded": [list(r) for r in ns["coded"].select("item_id", "codes.*").collect()],
       "first_codes": [list(r) for r in ns["first_codes"].collect()],
       "rejects": [list(r) for r in ns["rejects"].select("item_id", "reason").collect()],
       "session": type(spark).__module__}
open(sys.argv[2], "w").write(json.dumps(out))
"""


def run_readme_example(session: str, root, request) -> dict:
    code = readme_example(root)
    if session == "classic":
        ns = {"spark": request.getfixturevalue("spark")}
        exec(code, ns)
        return {"coded": [list(r) for r in ns["coded"].select("item_id", "codes.*").collect()],
                "first_codes": [list(r) for r in ns["first_codes"].collect()],
                "rejects": [list(r) for r in ns["rejects"].select("item_id", "reason").collect()]}
    import json
    import os
    import subprocess
    import sys

    (root / "example.py").write_text(code)
    env = dict(os.environ, SPARK_REMOTE=request.getfixturevalue("connect_url"), PYSPARK_PYTHON=sys.executable)
    r = subprocess.run([sys.executable, "-c", CLIENT, str(root / "example.py"), str(root / "out.json")],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    out = json.loads((root / "out.json").read_text())
    assert out.pop("session").startswith("pyspark.sql.connect")
    return out


@pytest.mark.parametrize("session", ["classic", "connect"])
def test_readme_examples_give_the_jobs_ids_on_classic_and_connect(request, session, catalogue, tmp_path):
    root, table, rejects = catalogue
    work = tmp_path / "work"
    shutil.copytree(root / "ckpt", work / "ckpt")
    shutil.copytree(root / "emb", work / "emb")
    ns = run_readme_example(session, work, request)
    by_id = {i: k for k, i in enumerate(table["item_id"])}

    rows = [dict(zip(["item_id", "sid_0", "sid_1", "sid_2", "reason"], r)) for r in ns["coded"]]
    assert len(rows) == N
    for r in rows:
        if r["item_id"] in by_id:
            k = by_id[r["item_id"]]
            assert (r["sid_0"], r["sid_1"], r["sid_2"], r["reason"]) == (
                table["sid_0"][k], table["sid_1"][k], table["sid_2"][k], None)
        else:  # the rejects of the job, with the same reason, and no code
            assert (r["sid_0"], r["sid_1"], r["sid_2"], r["reason"]) == (None, None, None, rejects[str(r["item_id"])])
    sql = {i: sid0 for i, sid0 in ns["first_codes"]}
    assert sql == {i: (table["sid_0"][by_id[i]] if i in by_id else None) for i in range(N)}

    ids = pq.read_table(work / "my_ids").sort_by("item_id").to_pydict()
    assert ids == {k: v for k, v in table.items() if k != "model_version"}
    assert {i: reason for i, reason in ns["rejects"]} == rejects


def test_model_is_built_once_per_python_worker(spark, tiny_blob):
    """24 tasks of 4 batches each on 2 cores: every worker process that encoded built the
    model once, not per task or batch (keyed by model version: a name no other test uses)."""
    import dataclasses

    from pyspark.sql import functions as F

    ckpt = dataclasses.replace(tiny_blob, config={**tiny_blob.config, "model_version": "build-count-test",
                                                  "model_version_source": "explicit"})
    x = clustered(2400, 16, seed=82)
    df = spark.createDataFrame([(i, list(map(float, v))) for i, v in enumerate(x)], "item_id bigint, embedding array<float>")
    codes = semantic_codes(ckpt)

    def where(ids: pa.Array) -> pa.Array:
        """Evaluated right after the codes, in the same Python worker: which process, which
        task, and how many models of this version that process has built so far."""
        import os

        from pyspark import TaskContext

        from semid_udf.worker import arrow as sa

        n = len(ids)
        return pa.StructArray.from_arrays(
            [pa.array([os.getpid()] * n, pa.int64()), pa.array([TaskContext.get().partitionId()] * n, pa.int64()),
             pa.array([sa.BUILDS["build-count-test"]] * n, pa.int64())], names=["pid", "task", "builds"])

    probe = F.arrow_udf(where, "pid bigint, task bigint, builds bigint")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "25")  # 4 batches per task
    try:
        rows = (df.repartition(24).select(codes("embedding").alias("c"), probe("item_id").alias("w"))
                .select("c.sid_0", "w.*").collect())
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")
    assert len(rows) == 2400 and all(r["sid_0"] is not None for r in rows)
    builds: dict[int, set[int]] = {}
    tasks: dict[int, set[int]] = {}
    for r in rows:
        builds.setdefault(r["pid"], set()).add(r["builds"])
        tasks.setdefault(r["pid"], set()).add(r["task"])
    assert all(b == {1} for b in builds.values()), builds
    assert sum(len(t) for t in tasks.values()) == 24 and max(len(t) for t in tasks.values()) > 1, tasks


def vector_udt_frame(spark, x, sparse_row=None):
    from pyspark.ml.linalg import Vectors, VectorUDT
    from pyspark.sql import types as T

    rows = [(i, Vectors.dense(v.astype(float).tolist())) for i, v in enumerate(x)]
    if sparse_row is not None:
        rows[sparse_row] = (sparse_row, Vectors.sparse(16, [1], [2.0]))
    schema = T.StructType([T.StructField("item_id", T.LongType()), T.StructField("embedding", VectorUDT())])
    return spark.createDataFrame(rows, schema)


def typed_inputs(spark, x, root):
    """(name, path, config sections, rejected ids): the same vectors in each column type, as
    Parquet files; bad rows where a type has its own reject."""
    n, d = x.shape
    ids = pa.array(range(n), pa.int64())
    out = []

    def put(name, emb, input_cfg=None, rejected=None, table=None):
        p = root / name
        p.mkdir()
        pq.write_table(table if table is not None else pa.table({"item_id": ids, "embedding": emb}), p / "a.parquet")
        out.append((name, p, input_cfg or {}, rejected or {}))

    lists = [list(map(float, v)) for v in x]
    put("float", pa.array(lists, pa.list_(pa.float32())))
    put("double", pa.array(x.astype(np.float64).tolist(), pa.list_(pa.float64())))
    put("fixed_size_list", pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), d))
    blobs = [v.astype("<f4").tobytes() for v in x]
    blobs[3] = blobs[3][:-4]
    put("binary_f32", pa.array(blobs, pa.binary()), {"binary_dtype": "float32"}, {3: "wrong_length"})
    put("binary_f64", pa.array([v.astype("<f8").tobytes() for v in x], pa.binary()), {"binary_dtype": "float64"})
    put("nested", None, {"embedding_col": "result.values"}, table=pa.table({
        "item_id": ids, "result": pa.StructArray.from_arrays([pa.array(lists, pa.list_(pa.float32()))], ["values"])}))
    p = root / "vector"  # written by Spark, so Spark reads it back as an ML vector
    vector_udt_frame(spark, x, sparse_row=5).write.parquet(str(p))
    out.append(("vector", p, {}, {5: "sparse_vector"}))
    return out


@pytest.fixture(scope="session")  # for the session-scoped fixture that uses it
def typed(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("typed")
    x = clustered(60, 16, seed=83)
    return x, typed_inputs(spark, x, root)


@pytest.fixture(scope="session")  # once per worker, as the inputs it reads
def reference(spark, tiny_blob, typed):
    x, inputs = typed
    ids, _ = semantic_ids(str(inputs[0][1]), tiny_blob, config=config(), spark=spark)
    return {r["item_id"]: tuple(r[1:]) for r in ids.collect()}


@pytest.mark.parametrize("kind", ["float", "double", "fixed_size_list", "binary_f32", "binary_f64", "nested", "vector"])
@pytest.mark.parametrize("reader", ["arrow", "fetched", "spark"])
def test_every_column_type_gives_the_same_ids_in_both_readers_and_the_udf(spark, tiny_blob, typed, reference, kind,
                                                                         reader):
    """``fetched``: the pyarrow reader on the bytes Spark's binaryFile source fetched
    (input.fetch=spark), as for an s3a:// or abfss:// input."""
    x, inputs = typed
    name, path, input_cfg, rejected = next(i for i in inputs if i[0] == kind)
    how = {"reader": "arrow", "fetch": "spark"} if reader == "fetched" else {"reader": reader}
    cfg = config(input={**input_cfg, **how}, output={"max_reject_rate": 0.1})
    res = semantic_ids(str(path), tiny_blob, config=cfg, spark=spark)
    try:
        got = {r["item_id"]: tuple(r[1:]) for r in res.ids.collect()}
        rej = {int(r["item_id"]): r["reason"] for r in res.rejects.collect()}
    finally:
        res.unpersist()
    assert rej == rejected
    codes = {i: v[:3] for i, v in got.items()}
    assert codes == {i: v[:3] for i, v in reference.items() if i not in rejected}
    if not rejected:  # same rows: the same suffixes, semantic ids and hashes too
        assert got == reference
    if reader == "spark":  # the UDF on the DataFrame Spark read: the same codes, the same reasons
        from pyspark.sql import functions as F

        df = spark.read.parquet(str(path))
        col = F.col(input_cfg.get("embedding_col", "embedding"))
        udf = semantic_codes(tiny_blob, binary_dtype=input_cfg.get("binary_dtype"))
        # Spark 4.3's columnar input path for Arrow UDFs fails on ML vectors read from Parquet
        # ([UNSUPPORTED_DATATYPE] UDT): the README says to switch it off, as done here
        key = "spark.sql.execution.arrow.pythonUDF.columnarInput.enabled"
        spark.conf.set(key, "false" if kind == "vector" else "true")
        try:
            rows = df.select("item_id", udf(col).alias("c")).select("item_id", "c.*").collect()
        finally:
            spark.conf.unset(key)
        assert {r["item_id"]: r["reason"] for r in rows if r["reason"]} == rejected
        assert {r["item_id"]: (r["sid_0"], r["sid_1"], r["sid_2"]) for r in rows if not r["reason"]} == codes


def test_half_floats_read_by_pyarrow_and_refused_clearly_by_spark(spark, tiny_blob, tmp_path):
    x = clustered(40, 16, seed=84)
    half = x.astype(np.float16)
    p = tmp_path / "half"
    p.mkdir()
    pq.write_table(pa.table({"item_id": pa.array(range(40), pa.int64()),
                             "embedding": pa.array(list(half), pa.list_(pa.float16()))}), p / "a.parquet")
    res = semantic_ids(str(p), tiny_blob, config=config(input={"reader": "arrow"}), spark=spark)
    got = {r["item_id"]: (r["sid_0"], r["sid_1"], r["sid_2"]) for r in res.ids.collect()}
    res.unpersist()
    ref = write_input(tmp_path / "ref", list(range(40)), [list(map(float, v)) for v in half.astype(np.float32)])
    ref_ids = semantic_ids(str(ref), tiny_blob, config=config(), spark=spark)
    assert got == {r["item_id"]: (r["sid_0"], r["sid_1"], r["sid_2"]) for r in ref_ids.ids.collect()}
    ref_ids.unpersist()
    from semid_udf.errors import InputError

    with pytest.raises(InputError, match="float16.*input.reader=arrow"):
        semantic_ids(str(p), tiny_blob, config=config(input={"reader": "spark"}), spark=spark)
    with pytest.raises(InputError, match="which plans an input whose files Spark fetches, has no float16; use "
                                         "input.fetch=pyarrow"):
        semantic_ids(str(p), tiny_blob, config=config(input={"reader": "arrow", "fetch": "spark"}), spark=spark)


def test_a_checkpoint_that_does_not_fit_its_weights_fails_on_the_driver_with_the_cause(spark, tiny_checkpoint,
                                                                                      tmp_path):
    import json

    from semid_udf.errors import CheckpointError

    bad = tmp_path / "bad"
    shutil.copytree(tiny_checkpoint, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["model"]["levels"] = 2
    cfg["model_version_source"] = "explicit"  # the config no longer derives its version: accepted as named
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"the weights do not fit a model.kind=rqvae model of its config.json: "
                                              r".*shapes \['quantizer.codebooks: expected \[2, 16, 8\], got \[3, 16, 8\]'\]"):
        semantic_codes(str(bad))
