"""The bring-your-own-RQ-VAE example end to end, through the console scripts: train.py saves a
.pt, semid-import probes and converts it, semid-assign publishes the table, whose codes are
the model's own for every item; the batch-dependent variant is refused; an executor that
cannot import the factory's module fails with one line that says how to ship it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from .conftest import ROOT

BIN = Path(sys.executable).parent
EXAMPLE = ROOT / "examples" / "byo_rqvae"
DIM, LEVELS, CODEBOOK = 32, 3, 32


def published_ids(wh: Path, table: str, model_version: str) -> dict[int, tuple[int, ...]]:
    """item_id -> (sid_0, ..., sid_{L-1}) as published for one model version, read straight from
    the files with DuckDB (no Spark): the version's latest complete manifest row lists the data
    files (relative to ``<name>_data``) that make up the version."""
    import duckdb

    db, name = table.split(".")
    root = wh / f"{db}.db"
    commits = duckdb.sql(
        f"SELECT files FROM read_parquet('{root / (name + '_manifest')}/*.parquet') "
        f"WHERE status = 'complete' AND model_version = '{model_version}' ORDER BY seq DESC LIMIT 1").fetchall()
    assert commits, f"no complete run of {model_version} in {table}'s manifest"
    files = [str(root / f"{name}_data" / f) for f in commits[0][0]]
    sids = ", ".join(f"sid_{i}" for i in range(LEVELS))
    rows = duckdb.sql(f"SELECT item_id, {sids} FROM read_parquet({files!r})").fetchall()
    out = {int(r[0]): tuple(int(v) for v in r[1:]) for r in rows}
    assert len(out) == len(rows), "an item_id appears twice"
    return out


def run(cmd, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """A console script with the example's folder (and nothing else) on PYTHONPATH, as its README runs them."""
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=str(EXAMPLE))
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def import_args(weights: Path, factory: str, sample: Path, checkpoint: Path) -> list[str]:
    return [str(BIN / "semid-import"), "--weights", str(weights), "--key", "model", "--factory", factory,
            "--method", "get_codes", "--input-dim", str(DIM), "--levels", str(LEVELS),
            "--codebook-size", str(CODEBOOK), "--sample", str(sample), "--checkpoint", str(checkpoint)]


def model_codes(weights: Path, x: np.ndarray) -> np.ndarray:
    """The model's own codes, computed here with the example's module (not through semid)."""
    sys.path.insert(0, str(EXAMPLE))
    try:
        import rqvae

        state = torch.load(weights, map_location="cpu", weights_only=True)["model"]
        model = rqvae.build({"model": {"input_dim": DIM, "levels": LEVELS, "codebook_size": CODEBOOK}}, state).eval()
        with torch.inference_mode():
            return model.get_codes(torch.from_numpy(x)).numpy()
    finally:
        sys.path.remove(str(EXAMPLE))
        sys.modules.pop("rqvae", None)


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """The example trained and imported once: (work dir, model.pt, input dir, checkpoint, embeddings)."""
    work = tmp_path_factory.mktemp("byo")
    t = run([sys.executable, str(EXAMPLE / "train.py"), "--out", "model.pt", "--rows", "2000", "--epochs", "2"],
            cwd=work)
    assert t.returncode == 0, t.stderr[-3000:]
    rng = np.random.default_rng(17)
    centres = rng.normal(size=(20, DIM)).astype(np.float32)
    x = (centres[rng.integers(0, 20, 300)] + 0.3 * rng.normal(size=(300, DIM))).astype(np.float32)
    inp = work / "input"
    inp.mkdir()
    for part, idx in enumerate(np.array_split(np.arange(300), 2)):
        pq.write_table(pa.table({"item_id": pa.array(idx + 5000, pa.int64()),
                                 "embedding": pa.array([list(map(float, v)) for v in x[idx]], pa.list_(pa.float32()))}),
                       inp / f"part-{part}.parquet")
    p = run(import_args(work / "model.pt", "rqvae:build", inp, work / "ck"), cwd=work)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "layout           batch_major (detected)" in p.stdout
    return work, work / "model.pt", inp, work / "ck", x


def test_the_example_end_to_end_gives_the_models_own_codes(imported):
    work, weights, inp, ck, x = imported
    version = json.loads((ck / "config.json").read_text())["model_version"]
    a = run([str(BIN / "semid-assign"), "--input", str(inp), "--checkpoint", str(ck), "--table", "byo.ids",
             "--warehouse", str(work / "wh")], cwd=work)
    assert a.returncode == 0, a.stderr[-3000:]
    assert "rows in          300" in a.stdout
    expected = {5000 + i: tuple(int(v) for v in row) for i, row in enumerate(model_codes(weights, x))}
    assert published_ids(work / "wh", "byo.ids", version) == expected


def test_the_batch_dependent_variant_is_refused_with_one_line(imported):
    work, weights, inp, _, _ = imported
    p = run(import_args(weights, "rqvae_batch_dependent:build", inp, work / "refused"), cwd=work)
    assert p.returncode == 2, p.stderr[-3000:]
    lines = p.stderr.strip().splitlines()
    last = lines[-1]
    assert last.startswith("semid-import: error: probe: codes depend on the batch: item "), last
    assert ", level " in last and "batches of 7 rows" in last
    assert not any(ln.startswith("Traceback") for ln in lines)
    assert not (work / "refused").exists()


def test_an_executor_that_cannot_import_the_factory_says_how_to_ship_it(imported, spark, monkeypatch):
    """The driver imports the module (it probes the model) but the executors cannot: this
    process has the example's folder on its path, the shared session's Python workers do not.
    The line checked is the one the console scripts print after "semid-assign: error: "."""
    from semid_udf.errors import one_line
    from semid_udf.model.checkpoint import read_checkpoint
    from semid_udf.table.publish import run_assign

    from .spark_helpers import config

    work, _, inp, ck, _ = imported
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.delitem(sys.modules, "rqvae", raising=False)
    try:
        with pytest.raises(Exception) as e:  # Spark's error for the failed task, the worker's error inside
            run_assign(spark, config(), read_checkpoint(ck), table="byo.noimport", input_path=str(inp),
                       warehouse=str(work / "wh_noimport"))
    finally:
        sys.modules.pop("rqvae", None)
    msg = one_line(e.value)
    assert msg.startswith("ConfigError: plugin.factory 'rqvae:build': cannot import module 'rqvae'"), msg
    for needle in ("wheel", "--py-files", "spark.addArtifacts(FILE.py, pyfile=True)"):
        assert needle in msg, needle


def test_py_files_ships_the_factory_on_spark_connect(imported, connect_url):
    """A Spark Connect client: --py-files adds the module with spark.addArtifacts(pyfile=True)."""
    work, weights, inp, ck, x = imported
    env_remote = dict(SPARK_REMOTE=connect_url)
    cmd = [str(BIN / "semid-assign"), "--input", str(inp), "--checkpoint", str(ck), "--table", "byo.conn",
           "--warehouse", str(work / "wh_conn"), "--py-files", str(EXAMPLE / "rqvae.py")]
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, **env_remote)
    env.pop("PYTHONPATH", None)
    a = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert a.returncode == 0, a.stderr[-3000:]
    version = json.loads((ck / "config.json").read_text())["model_version"]
    expected = {5000 + i: tuple(int(v) for v in row) for i, row in enumerate(model_codes(weights, x))}
    assert published_ids(work / "wh_conn", "byo.conn", version) == expected
