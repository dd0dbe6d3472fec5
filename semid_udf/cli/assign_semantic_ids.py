"""semid-assign: give every item a semantic ID with a checkpoint and publish the table.

    semid-assign --input PATH --checkpoint DIR --table [CATALOG.]DB.NAME [--warehouse DIR]
                 [--location URI] [--mode full|append] [--remote sc://...]
    spark-submit jobs/assign_semantic_ids.py (same flags; semid installed where it runs)
"""
from __future__ import annotations

from typing import Sequence

from . import common

PROG = "semid-assign"


def parser():
    p = common.base_parser(PROG, "Assign RQ-VAE semantic IDs to every item and publish the table.")
    common.add_input(p)
    common.add_session(p)
    common.add_py_files(p)
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (config.json + model.safetensors)")
    p.add_argument("--table", required=True, help="output table DB.NAME or CATALOG.DB.NAME")
    p.add_argument("--warehouse", help="warehouse directory (table location and local metastore)")
    p.add_argument("--location", help="create the tables as external Parquet tables under this URI "
                                      "(shorthand for --set output.location=...; Unity Catalog needs one)")
    p.add_argument("--mode", choices=["full", "append"], help="full: replace this model version; append: new items only")
    p.add_argument("--stream", action="store_true",
                   help="Structured Streaming over --input (a folder new files arrive in) or --input-table: each "
                        "micro-batch gives IDs to new items (append rules), exactly once")
    p.add_argument("--stream-checkpoint", help="--stream: Spark's checkpoint location (the stream's identity: "
                                               "restart with the same one)")
    p.add_argument("--trigger", default="available-now",
                   help="--stream: available-now (every file there now, then stop; the default) or an interval "
                        "such as '30 seconds' (run until stopped)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"],
                   help="shorthand for --set encode.device=...: auto = the task's GPU, else CUDA_VISIBLE_DEVICES, else CPU")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    common.setup_logging(args.verbose, args.quiet)
    if args.device:
        args.overrides.append(f"encode.device={args.device}")
    if args.location:
        args.overrides.append(f"output.location={args.location}")
    cfg = common.load(args)
    from semid_udf.model.checkpoint import read_checkpoint

    ckpt = read_checkpoint(args.checkpoint)  # digest checked before any Spark work
    from semid_udf.table.publish import check_paths

    check_paths(args.input, args.checkpoint, args.warehouse, args.table, cfg.output.location or None)

    from semid_udf.errors import ConfigError
    from semid_udf.table.commit import new_run_id
    from semid_udf.table.publish import run_assign
    from semid_udf.spark.session import build_session

    if args.stream and (not args.stream_checkpoint or args.mode):
        raise ConfigError("--stream: expected --stream-checkpoint DIR and no --mode (each micro-batch appends)")
    run_id = new_run_id()
    with common.warehouse_lock(cfg, args.warehouse, args.remote, run_id):
        spark = build_session(f"semid-assign {ckpt.model_version}", cfg.spark, args.warehouse, args.remote)
        common.ship_py_files(spark, args.py_files)
        if args.stream:
            from semid_udf.table.stream import run_stream

            runs = run_stream(spark, cfg, ckpt, table=args.table, checkpoint_location=args.stream_checkpoint,
                              input_path=args.input, input_table=args.input_table, warehouse=args.warehouse,
                              trigger=args.trigger)
            common.summary.info("semid-assign --stream: %d micro-batches committed, %d new IDs", len(runs),
                              sum(r.rows_new for r in runs))
            return 0
        res = run_assign(spark, cfg, ckpt, table=args.table, input_path=args.input, input_table=args.input_table,
                         warehouse=args.warehouse, mode=args.mode, run_id=run_id)
    print_summary(res)
    return 0


def print_summary(res) -> None:
    s = common.summary
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
    common.exit_on_failure(common.run_main(PROG, main, None))


if __name__ == "__main__":
    cli()
