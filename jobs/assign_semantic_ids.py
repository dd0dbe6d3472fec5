"""semid-assign: give every item a semantic ID with a checkpoint and write the table.

    semid-assign --input PATH --checkpoint DIR --table DB.NAME [--warehouse DIR] [--mode full|append]
    spark-submit jobs/assign_semantic_ids.py (same flags)
"""
from __future__ import annotations

import sys
from typing import Sequence

if __package__ in (None, ""):  # run as a file by spark-submit: import as the package
    import os

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jobs import _cli
from semid_udf.checkpoint import read_checkpoint
from semid_udf.errors import UnsafeSettingError

PROG = "semid-assign"


def parser():
    p = _cli.base_parser(PROG, "Assign RQ-VAE semantic IDs to every item and write the table.")
    _cli.add_input(p)
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (config.json + model.safetensors)")
    p.add_argument("--table", required=True, help="output table DB.NAME")
    p.add_argument("--warehouse", help="warehouse directory (table location and local metastore)")
    p.add_argument("--mode", choices=["full", "append"], help="full: replace this model version; append: new items only")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"],
                   help="shorthand for --set encode.device=...: auto = the task's GPU, else CUDA_VISIBLE_DEVICES, else CPU")
    return p


def check_paths(input_path: str | None, checkpoint: str, warehouse: str | None, table: str) -> None:
    """The output may not be the input, contain it, or lie inside the checkpoint."""
    out_root = _cli.local_path(warehouse)
    if out_root is None:
        return
    db, _, tbl = table.rpartition(".")
    out = out_root / f"{db or 'default'}.db" / tbl
    ck = _cli.local_path(checkpoint)
    inp = _cli.local_path(input_path)
    for what, p in (("input", inp), ("checkpoint", ck)):
        if p is None:
            continue
        if out == p or p.is_relative_to(out) or out.is_relative_to(p):
            raise UnsafeSettingError(
                f"output location {out}: expected apart from the {what} {p}, got one inside the other; refusing to write")


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _cli.setup_logging(args.verbose, args.quiet)
    if args.device:
        args.overrides.append(f"encode.device={args.device}")
    cfg = _cli.load(args)
    blob = read_checkpoint(args.checkpoint)  # digest checked before any Spark work
    check_paths(args.input, args.checkpoint, args.warehouse, args.table)

    from semid_udf.assign import run_assign
    from semid_udf.session import build_session

    spark = build_session(f"semid-assign {blob.model_version}", cfg.spark, args.warehouse)
    res = run_assign(spark, cfg, blob, table=args.table, input_path=args.input, input_table=args.input_table,
                     warehouse=args.warehouse, mode=args.mode)
    print_summary(res)
    return 0


def print_summary(res) -> None:
    s = _cli.summary
    total = res.timings.get("total", 0.0)
    s.info("semid-assign: run %s complete", res.run_id)
    s.info("  table            %s (model_version=%s, %s)", res.table, res.model_version, res.mode)
    s.info("  rows in          %d", res.rows_in)
    s.info("  rows out         %d (new: %d)", res.rows_out, res.rows_new)
    s.info("  rows rejected    %d %s", res.rows_rejected, res.rejects_by_reason or "")
    s.info("  unique before suffix  %s (largest bucket %s)", res.buckets.get("unique_rate_before_suffix"),
           res.buckets.get("largest_bucket"))
    s.info("  time             %.1f s (%.0f items/s)", total, res.rows_in / total if total else 0.0)


def cli() -> None:
    _cli.exit_on_failure(_cli.run_main(PROG, main, None))


if __name__ == "__main__":
    cli()
