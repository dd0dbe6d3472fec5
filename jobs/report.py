"""semid-report: how good are a checkpoint's semantic IDs on (a sample of) an embedding table?

    semid-report --checkpoint DIR --input PATH --out DIR [--rows 200000] [--nn-sample 20000]
    spark-submit jobs/report.py (same flags)

Writes ``report.json`` (per-level utilisation, perplexity and dead codes; unique-ID rate
before the suffix and bucket sizes; reconstruction error in latent and input space;
nearest-neighbour coherence against chance) and ``code_usage.png`` / ``bucket_sizes.png``.
Only a bounded sample of the table reaches the driver.
"""
from __future__ import annotations

from typing import Sequence

from jobs import _cli

PROG = "semid-report"


def parser():
    p = _cli.base_parser(PROG, "Quality report of a checkpoint's semantic IDs on a sample of an embedding table.")
    _cli.add_input(p)
    _cli.add_session(p)
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (config.json + model.safetensors)")
    p.add_argument("--out", required=True, help="directory for report.json and the PNG plots")
    p.add_argument("--rows", type=int, default=200_000, help="items sampled from the input (bounded, by id hash)")
    p.add_argument("--nn-sample", type=int, default=20_000, help="items among which exact nearest neighbours are found")
    return p


def report(spark, cfg, blob, out: str, input_path: str | None = None, input_table: str | None = None,
           rows: int = 200_000, nn_sample: int = 20_000) -> dict:
    """Sample with Spark, encode on the driver exactly as the assign job does, score, write."""
    from semid_udf import quality
    from semid_udf.checkpoint import build_model
    from semid_udf.encode import CodeEncoder, effective_plugin
    from semid_udf.errors import ConfigError
    from semid_udf.sample import take_sample
    from semid_udf.inputs import normalise_frame, read_input

    if rows <= 1 or nn_sample <= 1:
        raise ConfigError(f"--rows and --nn-sample: expected > 1, got {rows} and {nn_sample}")
    df, _ = normalise_frame(read_input(spark, input_path, input_table), cfg.input)
    _cli.log.info("semid-report: sampling")
    x = take_sample(df, int(blob.model["input_dim"]), rows, cfg.train.seed, cfg.input.binary_dtype)
    codes = CodeEncoder(blob, cfg.encode, cfg.plugin)(x)
    size = int(blob.model["codebook_size"])
    if effective_plugin(blob, cfg.plugin).factory:  # a user's model (or an imported one): only what the codes tell
        rep = quality.code_report(codes, size, x, nn_sample=nn_sample, seed=cfg.train.seed)
    else:
        rep = quality.checkpoint_report(build_model(blob), codes, x, nn_sample=nn_sample, seed=cfg.train.seed)
    rep["model_version"] = blob.model_version
    rep["input"] = input_path or input_table
    rep["targets"] = quality.targets(rep)
    quality.write_json(rep, f"{out}/report.json")
    rep["plots"] = [str(p) for p in quality.plot(codes, size, out, title=blob.model_version)]
    return rep


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _cli.setup_logging(args.verbose, args.quiet)
    cfg = _cli.load(args)
    from semid_udf.checkpoint import read_checkpoint
    from semid_udf.session import build_session

    blob = read_checkpoint(args.checkpoint)  # digest checked before any Spark work
    spark = build_session(f"semid-report {blob.model_version}", cfg.spark, remote=args.remote)
    rep = report(spark, cfg, blob, args.out, args.input, args.input_table, args.rows, args.nn_sample)
    print_summary(rep, args.out)
    return 0


def print_summary(rep: dict, out: str) -> None:
    s = _cli.summary
    s.info("semid-report: model %s on %d items -> %s/report.json", rep["model_version"], rep["items"], out)
    s.info("  utilisation per level  %s", [round(x["utilisation"], 4) for x in rep["per_level"]])
    s.info("  perplexity per level   %s", [round(x["perplexity"], 1) for x in rep["per_level"]])
    b = rep["buckets"]
    s.info("  unique before suffix   %.4f (largest bucket %d, %d items share an ID)", b["unique_rate"],
           b["largest_bucket"], b["items_sharing_an_id"])
    if "reconstruction" in rep:
        r = rep["reconstruction"]
        s.info("  reconstruction         latent %.5f (relative %.4f), input %.5f (relative %.4f)",
               r["latent_mse"], r["latent_relative"], r["input_mse"], r["input_relative"])
    c = rep["coherence"]
    for d, what in ((1, "first code"), (2, "first two codes")):
        if f"lift_first_{d}" in c:
            s.info("  nearest neighbour shares the %s: %.4f (chance %.5f, %.1fx)", what,
                   c[f"nn_shares_first_{d}"], c[f"chance_first_{d}"], c[f"lift_first_{d}"])
    s.info("  targets                %s", rep["targets"])


def cli() -> None:
    _cli.exit_on_failure(_cli.run_main(PROG, main, None))


if __name__ == "__main__":
    cli()
