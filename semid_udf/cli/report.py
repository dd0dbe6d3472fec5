"""semid-report: how good are a checkpoint's semantic IDs on (a sample of) an embedding table?

    semid-report --checkpoint DIR --input PATH --out DIR [--rows 200000] [--nn-sample 20000]
    semid-report --checkpoint A --checkpoint B [...] --input PATH --out DIR    # compare on one sample
    spark-submit jobs/report.py (same flags)

Writes ``report.json`` (per-level utilisation, perplexity and dead codes; unique-ID rate
before the suffix and bucket sizes; reconstruction error in latent and input space;
nearest-neighbour coherence against chance) and ``code_usage.png`` / ``bucket_sizes.png``.
With several checkpoints, each one's report goes to ``DIR/<n>-<model version>/`` and the
comparison, one row per checkpoint on the very same sample, to ``comparison.json``,
``comparison.md`` and ``comparison.png``. Only a bounded sample of the table reaches the driver.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from . import common

PROG = "semid-report"


def parser():
    p = common.base_parser(PROG, "Quality report of a checkpoint's semantic IDs on a sample of an embedding table.")
    common.add_input(p)
    common.add_session(p)
    p.add_argument("--checkpoint", required=True, action="append",
                   help="checkpoint directory (config.json + model.safetensors); repeat it to compare several "
                        "checkpoints on the same sample")
    p.add_argument("--out", required=True, help="directory for report.json and the PNG plots")
    p.add_argument("--rows", type=int, default=200_000, help="items sampled from the input (bounded, by id hash)")
    p.add_argument("--nn-sample", type=int, default=20_000, help="items among which exact nearest neighbours are found")
    return p


def report(spark, cfg, blob, out: str, input_path: str | None = None, input_table: str | None = None,
           rows: int = 200_000, nn_sample: int = 20_000) -> dict:
    """Sample with Spark, encode on the driver exactly as the assign job does, score, write."""
    return compare(spark, cfg, [blob], out, input_path, input_table, rows, nn_sample)[0]


def compare(spark, cfg, blobs: list, out: str, input_path: str | None = None, input_table: str | None = None,
            rows: int = 200_000, nn_sample: int = 20_000, names: list[str] | None = None) -> list[dict]:
    """One sample, every checkpoint scored on it: a report each (``out/report.json`` for one
    checkpoint; ``out/<n>-<version>/`` for several, plus the comparison files)."""
    from semid_udf.model import quality
    from semid_udf.model.checkpoint import build_model
    from semid_udf.model.encode import CodeEncoder, effective_plugin
    from semid_udf.errors import ConfigError
    from semid_udf.spark.inputs import normalise_frame, read_input
    from semid_udf.paths import local_path
    from semid_udf.spark.sample import take_sample

    if rows <= 1 or nn_sample <= 1:
        raise ConfigError(f"--rows and --nn-sample: expected > 1, got {rows} and {nn_sample}")
    local = local_path(out)
    if local is None:
        raise ConfigError(f"--out {out}: expected a local or mounted folder (the report and its plots are written "
                          "from this process), got a location on another file system")
    out = local
    names = names or [b.model_version for b in blobs]
    dims = {int(b.model["input_dim"]) for b in blobs}
    if len(dims) > 1:
        raise ConfigError("--checkpoint: the checkpoints compared must take embeddings of one dimension, got "
                          + ", ".join(f"{n}: {b.model['input_dim']}" for n, b in zip(names, blobs)))
    df, _ = normalise_frame(read_input(spark, input_path, input_table), cfg.input)
    common.log.info("semid-report: sampling")
    x = take_sample(df, dims.pop(), rows, cfg.train.seed, cfg.input.binary_dtype)
    reports, table = [], []
    for i, (name, blob) in enumerate(zip(names, blobs)):
        where = out if len(blobs) == 1 else f"{out}/{i + 1}-{blob.model_version}"
        codes = CodeEncoder(blob, cfg.encode, cfg.plugin)(x)
        size = int(blob.model["codebook_size"])
        if effective_plugin(blob, cfg.plugin).factory:  # a user's model (or an imported one): only what the codes tell
            rep = quality.code_report(codes, size, x, nn_sample=nn_sample, seed=cfg.train.seed)
        else:
            rep = quality.checkpoint_report(build_model(blob), codes, x, nn_sample=nn_sample, seed=cfg.train.seed)
        rep["model_version"] = blob.model_version
        rep["checkpoint"] = name
        rep["input"] = input_path or input_table
        rep["targets"] = quality.targets(rep)
        quality.write_json(rep, f"{where}/report.json")
        rep["plots"] = [str(p) for p in quality.plot(codes, size, where, title=blob.model_version)]
        training = blob.config.get("training") or {}
        kind = blob.model.get("kind", "rqvae") if not blob.config.get("plugin") else "imported"
        table.append(quality.comparison_row(name, kind, rep, training.get("fit_seconds")))
        reports.append(rep)
    if len(blobs) > 1:

        quality.write_json({"input": input_path or input_table, "items": int(len(x)), "nn_sample": nn_sample,
                            "rows": table}, f"{out}/comparison.json")
        Path(out, "comparison.md").write_text(quality.comparison_markdown(table))
        quality.plot_comparison(table, f"{out}/comparison.png",
                                title=f"{len(x):,} items of {input_path or input_table}")
    return reports


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    common.setup_logging(args.verbose, args.quiet)
    cfg = common.load(args)
    from semid_udf.model.checkpoint import read_checkpoint
    from semid_udf.spark.session import build_session

    blobs = [read_checkpoint(c) for c in args.checkpoint]  # digests checked before any Spark work
    spark = build_session(f"semid-report {' '.join(b.model_version for b in blobs)}", cfg.spark, remote=args.remote)
    from semid_udf.paths import local_path

    args.out = local_path(args.out) or args.out  # file:/x is the folder /x (compare refuses other file systems)
    reps = compare(spark, cfg, blobs, args.out, args.input, args.input_table, args.rows, args.nn_sample,
                   names=list(args.checkpoint))
    for rep in reps:
        print_summary(rep, args.out if len(reps) == 1 else str(Path(rep["plots"][0]).parent))
    if len(reps) > 1:
        common.summary.info("semid-report: comparison of %d checkpoints on the same %d items -> %s/comparison.md "
                          "(and .json, .png)", len(reps), reps[0]["items"], args.out)
        common.summary.info("%s", Path(args.out, "comparison.md").read_text().rstrip())
    return 0


def print_summary(rep: dict, out: str) -> None:
    s = common.summary
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
    common.exit_on_failure(common.run_main(PROG, main, None))


if __name__ == "__main__":
    cli()
