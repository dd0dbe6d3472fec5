"""semid-train: fit an RQ-VAE on a bounded sample of an embedding table, write a checkpoint.

    semid-train --input PATH --checkpoint DIR [--config conf/x.yaml] [--set train.epochs=5]
    spark-submit jobs/train_rqvae.py (same flags)
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from . import common

PROG = "semid-train"


def parser():
    p = common.base_parser(PROG, "Fit an RQ-VAE on (a sample of) an embedding table and write a checkpoint.")
    common.add_input(p)
    common.add_session(p)
    p.add_argument("--checkpoint", required=True, help="checkpoint directory to write")
    p.add_argument("--model-version", help="explicit model version (default: derived from the weights)")
    return p


def train(spark, cfg, checkpoint: str, input_path: str | None = None, input_table: str | None = None,
          model_version: str | None = None) -> tuple[str, dict]:
    """Sample with Spark, fit on the driver, save; returns (model version, training metadata)."""
    from semid_udf.model.checkpoint import save_checkpoint
    from semid_udf.errors import ConfigError
    from semid_udf.spark.sample import embedding_dim, take_sample
    from semid_udf.spark.inputs import normalise_frame, read_input
    from semid_udf.model.train import fit

    df, _ = normalise_frame(read_input(spark, input_path, input_table), cfg.input)
    common.log.info("semid-train: sampling")
    dim = embedding_dim(df, cfg.input.binary_dtype)
    if cfg.model.input_dim and cfg.model.input_dim != dim:
        raise ConfigError(f"model.input_dim: expected {dim}, got {cfg.model.input_dim}")
    x = take_sample(df, dim, cfg.train.sample_size, cfg.train.seed, cfg.input.binary_dtype)
    model, meta = fit(x, replace(cfg.model, input_dim=dim), cfg.train)
    meta["input"] = input_path or input_table
    version = save_checkpoint(model, model.cfg, checkpoint, training=meta, model_version=model_version)
    return version, meta


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    common.setup_logging(args.verbose, args.quiet)
    cfg = common.load(args)
    from semid_udf.spark.session import build_session

    spark = build_session("semid-train", cfg.spark, remote=args.remote)
    version, meta = train(spark, cfg, args.checkpoint, args.input, args.input_table, args.model_version)
    s = common.summary
    s.info("semid-train: checkpoint %s written to %s", version, args.checkpoint)
    s.info("  sample rows %d, %.1f s; utilisation per level %s; unique-ID rate on the sample %s",
           meta["sample_rows"], meta["fit_seconds"], meta["utilisation_per_level"], meta["unique_rate_on_sample"])
    return 0


def cli() -> None:
    common.exit_on_failure(common.run_main(PROG, main, None))


if __name__ == "__main__":
    cli()
