"""semid-export: one committed model version as tokens, vocabulary and valid-ID prefixes.

    semid-export --table [CATALOG.]DB.NAME [--warehouse DIR] [--version V] --out DIR [--remote sc://...]
    spark-submit jobs/export_table.py (same flags; semid installed where it runs)
"""
from __future__ import annotations

from typing import Sequence

from . import common

PROG = "semid-export"


def parser():
    p = common.base_parser(PROG, "Export a committed model version for the model that trains on the IDs: tokens, "
                               "vocab.json, valid-ID prefixes, and a manifest with each file's sha256.")
    common.add_session(p)
    p.add_argument("--table", required=True, help="the published table DB.NAME or CATALOG.DB.NAME")
    p.add_argument("--warehouse", help="warehouse directory (as given to semid-assign)")
    p.add_argument("--version", help="model version (default: the latest committed one)")
    p.add_argument("--out", required=True, help="output directory (replaced: tokens/, prefixes/, vocab.json, "
                                                "manifest.json)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    common.setup_logging(args.verbose, args.quiet)
    cfg = common.load(args)
    from pathlib import Path

    from semid_udf.table.catalog import TableName
    from semid_udf.errors import ConfigError
    from semid_udf.table.export import export
    from semid_udf.paths import warehouse_path
    from semid_udf.table.commit import new_run_id
    from semid_udf.spark.session import build_session

    name = TableName.parse(args.table)
    where = f"the warehouse {args.warehouse}" if args.warehouse else "this session's catalog"
    if args.warehouse and not Path(warehouse_path(args.warehouse)).is_dir():
        raise ConfigError(f"--warehouse {args.warehouse}: expected the folder semid-assign published {name} in, got "
                          "no such folder")
    with common.warehouse_lock(cfg, args.warehouse, args.remote, new_run_id()):
        spark = build_session(f"semid-export {name}", cfg.spark, args.warehouse, args.remote)
        m = export(spark, name, args.out, args.version, where=where)
    s = common.summary
    s.info("semid-export: %s version %s (commit %s) -> %s", m["table"], m["model_version"], m["commit"]["run_id"],
           args.out)
    s.info("  items %d, prefixes %d, files %d", m["items"], m["prefixes"], len(m["files"]))
    return 0


def cli() -> None:
    common.exit_on_failure(common.run_main(PROG, main, None))


if __name__ == "__main__":
    cli()
