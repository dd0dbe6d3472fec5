"""model.kind=rqkmeans through what users run: the job publishes it, the UDF gives the job's
codes, semid-export reads its table, and semid-report compares it with an RQ-VAE on one
sample with the very figures semid_udf.model.quality gives for the same codes."""
from __future__ import annotations

import json

import numpy as np
import pytest

from semid_udf import read_checkpoint, semantic_codes

from semid_udf.model import quality
from semid_udf.table.catalog import TableName
from semid_udf.model.checkpoint import build_model, save_checkpoint
from semid_udf.config import EncodeConfig, ModelConfig, PluginConfig, TrainConfig
from semid_udf.model.encode import CodeEncoder
from semid_udf.table.export import export
from semid_udf.spark.inputs import normalise_frame, read_input
from semid_udf.table.publish import run_assign
from semid_udf.spark.sample import take_sample
from semid_udf.model.train import fit

from .conftest import clustered
from .spark_helpers import config, published_files, write_input

N = 600


@pytest.fixture(scope="module")
def km(tmp_path_factory):
    root = tmp_path_factory.mktemp("rqkm")
    x = clustered(N, 16, seed=31, centers=30)
    model, meta = fit(x, ModelConfig(kind="rqkmeans", levels=3, codebook_size=16),
                      TrainConfig(kmeans_iters=5, seed=2, threads=1))
    save_checkpoint(model, model.cfg, root / "ckpt", training=meta)
    inp = write_input(root / "in", list(range(N)), [list(map(float, v)) for v in x], files=3)
    return root, read_checkpoint(root / "ckpt"), inp, x


def test_job_udf_and_export_work_on_an_rqkmeans_checkpoint(spark, km):
    root, blob, inp, x = km
    res = run_assign(spark, config(), blob, table="rqkm.ids", input_path=str(inp), warehouse=str(root / "wh"))
    assert res.rows_out == N and res.rows_rejected == 0
    table = published_files(root / "wh", "rqkm.ids")
    expected = CodeEncoder(blob, EncodeConfig(), PluginConfig())(x)
    got = np.array([table[f"sid_{lvl}"] for lvl in range(3)]).T
    assert (got == expected[np.array(table["item_id"])]).all()

    codes = semantic_codes(str(root / "ckpt"))
    udf_rows = (spark.read.parquet(str(inp)).select("item_id", codes("embedding").alias("c"))
                .select("item_id", "c.sid_0", "c.sid_1", "c.sid_2").orderBy("item_id").collect())
    assert [tuple(r)[1:] for r in udf_rows] == [tuple(int(v) for v in row) for row in expected]

    m = export(spark, TableName.parse("rqkm.ids"), str(root / "out"))
    assert m["items"] == N and m["model_version"] == blob.model_version


def test_report_compares_checkpoints_with_qualitys_own_figures(spark, km, tiny_checkpoint, tmp_path):
    from semid_udf.cli.report import compare

    root, blob, inp, _ = km
    rqvae_dir = tmp_path / "rqvae"
    x16 = clustered(N, 16, seed=31, centers=30)
    model, meta = fit(x16, ModelConfig(hidden_dims=(32,), latent_dim=8, levels=3, codebook_size=16),
                      TrainConfig(epochs=2, batch_size=128, kmeans_iters=5, seed=2, threads=1))
    save_checkpoint(model, model.cfg, rqvae_dir, training=meta)
    blobs = [read_checkpoint(rqvae_dir), blob]
    cfg = config()
    out = tmp_path / "rep"
    compare(spark, cfg, blobs, str(out), input_path=str(inp), rows=N, nn_sample=300, names=["A", "B"])
    table = json.loads((out / "comparison.json").read_text())
    assert [r["checkpoint"] for r in table["rows"]] == ["A", "B"]
    assert [r["kind"] for r in table["rows"]] == ["rqvae", "rqkmeans"]
    md = (out / "comparison.md").read_text().splitlines()
    assert len(md) == 4 and md[2].startswith("| A | rqvae |") and md[3].startswith("| B | rqkmeans |")
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"

    # the same sample as the job's report takes, scored directly with semid_udf.model.quality
    df, _ = normalise_frame(read_input(spark, str(inp), None), cfg.input)
    x = take_sample(df, 16, N, cfg.train.seed)
    for row, b in zip(table["rows"], blobs):
        codes = CodeEncoder(b, cfg.encode, cfg.plugin)(x)
        rep = quality.code_report(codes, 16, x, nn_sample=300, seed=cfg.train.seed)
        recon = quality.reconstruction(build_model(b), x)
        assert row["unique_rate"] == rep["unique_rate"]
        assert row["utilisation"] == [s["utilisation"] for s in rep["per_level"]]
        assert row["largest_bucket"] == rep["buckets"]["largest_bucket"]
        assert row["p99_item_bucket_size"] == rep["buckets"]["p99_item_bucket_size"]
        assert row["items_in_buckets_over_8"] == rep["buckets"]["items_in_buckets_over_8"]
        for k in ("nn_shares_first_1", "lift_first_1", "nn_shares_first_2", "lift_first_2"):
            assert row[k] == pytest.approx(rep["coherence"][k], rel=1e-12)
        assert row["input_relative"] == pytest.approx(recon["input_relative"], rel=1e-9)
        assert row["fit_seconds"] == b.config["training"]["fit_seconds"]
