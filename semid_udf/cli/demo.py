"""semid-demo: make a deterministic demo catalogue, train, assign, print a summary.

    semid-demo [--workdir semid-demo] [--items 100000] [--dim 256] [--config ...] [--set ...]
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence, cast

import numpy as np

from . import common

if TYPE_CHECKING:
    from pyspark.sql import Row

PROG = "semid-demo"

# The embedded default: a small model that trains in well under a minute on 2 cores.
DEMO_CONFIG = {
    "model": {"hidden_dims": [256, 128], "latent_dim": 32, "levels": 4, "codebook_size": 256},
    "train": {"sample_size": 100_000, "epochs": 15, "batch_size": 1024, "seed": 0},
    "spark": {"spark.sql.shuffle.partitions": "8", "spark.driver.memory": "4g"},
}


def make_catalogue(path: Path, items: int, dim: int, seed: int = 7, files: int = 4) -> None:
    """A clustered catalogue: 64 topics x 32 sub-topics, items scattered around them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    topics = rng.normal(size=(64, dim)).astype(np.float32)
    subs = topics[:, None, :] + 0.6 * rng.normal(size=(64, 32, dim)).astype(np.float32)
    subs = subs.reshape(-1, dim)
    owner = rng.integers(0, len(subs), size=items)
    x = subs[owner] + 0.35 * rng.normal(size=(items, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = rng.permutation(items).astype(np.int64) + 1_000_000
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    for i, chunk in enumerate(np.array_split(np.arange(items), files)):
        emb = pa.FixedSizeListArray.from_arrays(pa.array(x[chunk].reshape(-1)), dim).cast(pa.list_(pa.float32()))
        pq.write_table(pa.table({"item_id": pa.array(ids[chunk]), "embedding": emb}), path / f"part-{i:05d}.parquet")


def main(argv: Sequence[str] | None = None) -> int:
    p = common.base_parser(PROG, "Demo: make a catalogue, train an RQ-VAE, assign semantic IDs, print a summary.")
    p.add_argument("--workdir", default="semid-demo", help="where the catalogue, checkpoint and warehouse go")
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=256)
    args = p.parse_args(argv)
    common.setup_logging(args.verbose, args.quiet)

    from semid_udf.model.checkpoint import read_checkpoint
    from semid_udf.config import JobConfig, load_config, merge

    cfg = load_config(args.config, args.overrides, base=merge(JobConfig(), DEMO_CONFIG))

    t0 = time.perf_counter()
    work = Path(args.workdir).resolve()
    cat, ck, wh = work / "catalogue", work / "checkpoint", work / "warehouse"
    common.log.info("making a demo catalogue of %d x %d under %s", args.items, args.dim, cat)
    make_catalogue(cat, args.items, args.dim)

    from .train_rqvae import train
    from semid_udf.table.publish import run_assign
    from semid_udf.spark.session import build_session

    spark = build_session("semid-demo", cfg.spark, str(wh))
    version, meta = train(spark, cfg, str(ck), input_path=str(cat))
    blob = read_checkpoint(ck)
    res = run_assign(spark, cfg, blob, table="demo.semantic_ids", input_path=str(cat), warehouse=str(wh))
    elapsed = time.perf_counter() - t0

    levels, k = int(blob.model["levels"]), int(blob.model["codebook_size"])
    used = cast("Row", spark.sql(
        "SELECT " + ", ".join(f"count(DISTINCT sid_{i}) AS l{i}" for i in range(levels))
        + f" FROM demo.semantic_ids WHERE model_version = '{version}'").first())
    some = cast("Row", spark.sql(f"SELECT item_id FROM demo.semantic_ids WHERE model_version = '{version}' "
                               "ORDER BY item_id LIMIT 1").first())
    query = (f"SELECT item_id, semantic_id FROM demo.semantic_ids "
             f"WHERE model_version = '{version}' AND item_id = {some['item_id']}")
    row = cast("Row", spark.sql(query).first())  # the table has the item: it was just published
    prefix = row["semantic_id"].split("-")[0]
    query2 = (f"SELECT item_id, semantic_id FROM demo.semantic_ids WHERE model_version = '{version}' "
              f"AND sid_0 = {prefix} ORDER BY semantic_id LIMIT 5")
    rows2 = spark.sql(query2).collect()

    s = common.summary
    s.info("")
    s.info("semid demo summary")
    s.info("  catalogue         %d items x %d dims (%s)", args.items, args.dim, cat)
    s.info("  checkpoint        %s (model_version %s, trained on %d rows in %.1f s)", ck, version,
           meta["sample_rows"], meta["fit_seconds"])
    s.info("  table             %s in %s", res.table, wh)
    s.info("  rows in / out / rejected   %d / %d / %d", res.rows_in, res.rows_out, res.rows_rejected)
    s.info("  utilisation per level      %s", " ".join(f"{used[f'l{i}'] / k:.1%}" for i in range(levels)))
    s.info("  unique rate before suffix  %.2f%% (largest bucket %d)",
           100 * res.buckets["unique_rate_before_suffix"], res.buckets["largest_bucket"])
    s.info("  total time        %.1f s", elapsed)
    s.info("")
    s.info("  %s;", query)
    s.info("    -> %s | %s", row["item_id"], row["semantic_id"])
    s.info("  %s;", query2)
    for r in rows2:
        s.info("    -> %s | %s", r["item_id"], r["semantic_id"])
    spark.stop()
    return 0


def cli() -> None:
    common.exit_on_failure(common.run_main(PROG, main, None))


if __name__ == "__main__":
    cli()
