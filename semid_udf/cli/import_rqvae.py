"""semid-import: make a semid checkpoint from your own trained RQ-VAE, after probing that its
codes are stable.

    semid-import --weights model.pt --factory my_pkg.rqvae:build --method get_codes \
                 --input-dim 64 --levels 3 --codebook-size 256 [--key model] [--sample emb.parquet] \
                 --checkpoint ckpt/
    python -m semid_udf.cli.import_rqvae (same flags)

No Spark: the sample (--sample) is read with pyarrow, the model runs in this process.
"""
from __future__ import annotations

from typing import Sequence

from . import common
from semid_udf.config import LAYOUTS

PROG = "semid-import"


def parser():
    p = common.base_parser(PROG, "Probe a trained RQ-VAE of your own and write it as a semid checkpoint.")
    p.add_argument("--weights", required=True,
                   help="model.pt / .pth / .bin (read with torch.load(weights_only=True) only) or model.safetensors")
    p.add_argument("--factory", help="'module:callable' called with (config dict, tensors) that returns the model "
                                     "(default: plugin.factory of --config/--set)")
    p.add_argument("--method", help="the model's method that takes a float32 tensor [batch, input_dim] and returns "
                                    "the codes (default: plugin.method, 'encode')")
    p.add_argument("--layout", choices=("auto", *LAYOUTS), help="layout of the codes the method returns (default: plugin.layout, "
                                                    "'auto': detected by the probe)")
    p.add_argument("--output", help="index (tuple/list) or key (dict) of the codes in the method's result "
                                    "(default: plugin.output, '': the result itself)")
    p.add_argument("--input-dim", type=int, required=True, help="embedding width the model takes")
    p.add_argument("--levels", type=int, required=True, help="codebook levels = codes per item")
    p.add_argument("--codebook-size", type=int, required=True, help="codes per level; each code in [0, size)")
    p.add_argument("--key", help="entry of a training checkpoint that holds the state dict, e.g. model")
    p.add_argument("--sample", help="Parquet file or directory of item ids and embeddings to probe on "
                                    "(columns input.id_col, input.embedding_col; default: a seeded normal sample)")
    p.add_argument("--sample-rows", type=int, default=2048, help="rows the probe runs on (default 2048)")
    p.add_argument("--seed", type=int, default=0, help="seed of the normal sample when --sample is not given")
    p.add_argument("--device", choices=["cpu", "auto", "cuda"], default="cpu", help="where the probe runs the model")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory to write")
    p.add_argument("--model-version", help="explicit model version (default: derived from the weights and the plugin)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    common.setup_logging(args.verbose, args.quiet)
    cfg = common.load(args)
    from semid_udf.model.importer import import_rqvae, read_sample

    sample = None
    if args.sample:
        sample = read_sample(args.sample, args.input_dim, args.sample_rows, cfg.input.id_col, cfg.input.embedding_col,
                             cfg.input.binary_dtype)
    res = import_rqvae(
        args.weights, pick(args.factory, cfg.plugin.factory), args.checkpoint,
        input_dim=args.input_dim, levels=args.levels, codebook_size=args.codebook_size,
        method=pick(args.method, cfg.plugin.method), layout=pick(args.layout, cfg.plugin.layout),
        output=pick(args.output, cfg.plugin.output), key=args.key, sample=sample, sample_rows=args.sample_rows,
        seed=args.seed, device=args.device, model_version=args.model_version)
    print_summary(res, args.codebook_size)
    return 0


def pick(flag, configured):
    """A flag given on the command line beats the config (CLI > YAML > defaults)."""
    return configured if flag is None else flag


def print_summary(res, codebook_size: int) -> None:
    s, pr, pl = common.summary, res.probe, res.plugin
    s.info("semid-import: checkpoint %s written to %s", res.model_version, res.checkpoint)
    s.info("  model            %s, method %s, output %r", pl["factory"], pl["method"], pl["output"])
    s.info("  layout           %s (%s)", pl["layout"], "detected" if pr["layout_detected"] else "declared")
    s.info("  probe            %d rows of %s, batches of %d and %d rows, %d calls each: codes stable",
           pr["rows"], pr["sample"], pr["batch_sizes"][0], pr["batch_sizes"][1], pr["calls_per_batch_size"])
    s.info("  codes used       %s of %d per level", pr["codes_used_per_level"], codebook_size)
    s.info("  unique on sample %.4f (largest bucket %d)", pr["unique_rate"], pr["largest_bucket"])
    s.info("  next             semid-assign --checkpoint %s --input ... --table DB.NAME "
           "(executors must import %s)", res.checkpoint, pl["factory"].split(":")[0])


def cli() -> None:
    common.exit_on_failure(common.run_main(PROG, main, None))


if __name__ == "__main__":
    cli()
