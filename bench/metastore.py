"""Cost of the Hive metastore client's start, alone (no other work on the machine):

    python bench/metastore.py [--warehouse /tmp/semid-metastore-bench]

Builds a semid session on a local warehouse, then times the first metastore call (creating
the database: the client and its embedded Derby database start here), creating semid's three
tables and views, and the first and second manifest rows. Run it twice: the first run also
creates the Derby database, the second is what a run against an existing warehouse pays.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--warehouse", default="/tmp/semid-metastore-bench")
    args = p.parse_args()
    from pyspark.sql import types as T

    from semid_udf import table as tb
    from semid_udf.spark.session import build_session

    def timed(label, fn):
        t0 = time.perf_counter()
        fn()
        print(f"{label:<40} {time.perf_counter() - t0:6.2f} s", flush=True)

    timed("JVM and session start", lambda: build_session("semid-metastore-bench", {}, args.warehouse))
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    timed("first metastore call (create database)", lambda: tb.ensure_database(spark, "bench", args.warehouse))
    timed("three tables and two views", lambda: (
        tb.ensure_table(spark, "bench.ids", tb.table_columns(T.LongType(), 4), ["model_version"]),
        tb.ensure_table(spark, "bench.ids_rejects", tb.REJECT_COLUMNS, ["model_version", "run_id"]),
        tb.ensure_table(spark, "bench.ids_manifest", tb.MANIFEST_COLUMNS, []),
        tb.create_views(spark, "bench.ids")))
    row = {"run_id": "bench", "model_version": "bench", "status": "running"}
    timed("first manifest row (first Spark job)", lambda: tb.write_manifest(spark, "bench.ids_manifest", row))
    timed("second manifest row", lambda: tb.write_manifest(spark, "bench.ids_manifest", row))
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
