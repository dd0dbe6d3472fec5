"""The job's rate by input kind, on the same rows: a local path, the same folder as a
``file:`` URI, and a Parquet metastore table (read by pyarrow from the files its catalog names,
and, for comparison, by Spark's reader as before); the URI and the table again with their files
fetched by Spark (``input.fetch=spark``: how an ``s3a://`` or ``abfss://`` input is read), and
the URI by Spark's reader (how such inputs were read before).

    python bench/table_input.py [--n 1000000] [--dim 768] [--repeat 3] [--files K] [--kinds NAME ...] [--tag ...]

Uses bench/run.py's data and checkpoint. The table is registered once in the run's warehouse
(``CREATE TABLE ... USING parquet LOCATION <data>``); every run publishes into a table of its
own there. Runs alternate, --repeat rounds; the median of each kind is reported with its ratio
to the local path's. Writes bench/out/<tag>.json.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
log = logging.getLogger("bench.table_input")


def register(wh: Path, data: Path) -> str:
    """``bench_in.emb``: an external Parquet table over ``data`` in the warehouse's metastore,
    created by a process of its own (its JVM, which holds the embedded metastore, must be gone
    before the jobs start)."""
    import subprocess

    subprocess.run([sys.executable, __file__, "--register", str(wh), str(data)], check=True)
    return "bench_in.emb"


def _register(wh: Path, data: Path) -> None:
    from semid_udf.spark.session import build_session

    spark = build_session("bench-table", {"spark.ui.enabled": "false"}, warehouse=str(wh))
    try:
        spark.sql(f"CREATE DATABASE IF NOT EXISTS bench_in LOCATION '{wh / 'bench_in.db'}'")
        spark.sql("DROP TABLE IF EXISTS bench_in.emb")
        spark.sql(f"CREATE TABLE bench_in.emb USING parquet LOCATION '{data}'")
        log.info("bench_in.emb: %d rows", spark.table("bench_in.emb").count())
    finally:
        spark.stop()


def split_files(data: Path, files: int) -> Path:
    """The same rows as ``data`` in ``files`` files of equal row counts (row groups of 50k rows,
    as bench/run.py writes them), beside it: how many files Spark's binaryFile gives tasks."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    out = data.with_name(f"{data.name}_files{files}")
    if (out / "_DONE").exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    table = ds.dataset(data, format="parquet")
    n = table.count_rows()
    per = -(-n // files)
    writer, k, written = None, 0, 0
    for batch in table.to_batches(batch_size=10_000):
        while batch.num_rows:
            if writer is None:
                writer = pq.ParquetWriter(out / f"part-{k:05d}.parquet", batch.schema)
            take = min(batch.num_rows, per - written)
            writer.write_batch(batch.slice(0, take), row_group_size=50_000)
            batch, written = batch.slice(take), written + take
            if written == per:
                writer.close()
                writer, k, written = None, k + 1, 0
    if writer is not None:
        writer.close()
    (out / "_DONE").write_text(str(n))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--tag", default=None)
    p.add_argument("--data-dir", default=str(ROOT / "bench" / "data"))
    p.add_argument("--files", type=int, default=0, help="the same rows rewritten into this many files first")
    p.add_argument("--kinds", nargs="*", help="only these kinds (and the local path), by their names in the table")
    p.add_argument("--register", nargs=2, metavar=("WH", "DATA"), help=argparse.SUPPRESS)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.register:
        _register(Path(args.register[0]), Path(args.register[1]))
        return 0
    from run import job, make_checkpoint, make_data

    tag = args.tag or f"table_input_n{args.n}_d{args.dim}"
    data = Path(args.data_dir) / f"emb_{args.n}_{args.dim}"
    make_data(data, args.n, args.dim)
    ck = make_checkpoint(Path(args.data_dir) / f"ckpt_{args.dim}", data, args.dim)
    if args.files:
        data = split_files(data, args.files)
    wh = ROOT / "bench" / "out" / tag / "wh"
    shutil.rmtree(wh.parent, ignore_errors=True)
    wh.mkdir(parents=True)
    table = register(wh, data)
    uri = data.resolve().as_uri()
    kinds = {
        "local path": ["--input", str(data)],
        "file: URI": ["--input", uri],
        "table, pyarrow reader": ["--input-table", table],
        "table, Spark's reader (before)": ["--input-table", table, "--set", "input.reader=spark"],
        # a file: URI forced through the path an s3a:// or abfss:// input takes: Spark's binaryFile
        # source fetches whole files, pyarrow decodes them in the tasks (reader=arrow: a file over
        # input.fetch_max_file_mb fails the run instead of going to Spark's reader unnoticed)
        "URI, files fetched by Spark": ["--input", uri, "--set", "input.fetch=spark", "--set", "input.reader=arrow"],
        "URI, Spark's reader (before)": ["--input", uri, "--set", "input.reader=spark"],
        "table, files fetched by Spark": ["--input-table", table, "--set", "input.fetch=spark", "--set",
                                          "input.reader=arrow"],
    }
    if args.kinds:
        kinds = {k: v for k, v in kinds.items() if k == "local path" or k in args.kinds}
    runs: dict[str, list[float]] = {k: [] for k in kinds}
    detail: dict[str, list[dict]] = {k: [] for k in kinds}
    for i in range(args.repeat):
        for k, (name, source) in enumerate(kinds.items()):
            r = job(data, ck, wh, f"bench.ids_{k}_{i}", None, "cpu", [], source=source)
            runs[name].append(r["items_s"])
            detail[name].append({"items_s": round(r["items_s"]), "job_s": r["job_s"], "encode_s": r["timings"]["encode"],
                                 "cpu_s_by_process": r["cpu_s_by_process"],
                                 "jvm_cpu_s_by_thread": dict(list(r["jvm_cpu_s_by_thread"].items())[:6])})
            log.info("%s run %d: %.1f s, %.0f items/s", name, i + 1, r["job_s"], r["items_s"])
    med = {k: statistics.median(v) for k, v in runs.items()}
    res = {"tag": tag, "n": args.n, "dim": args.dim, "items_s_median": {k: round(v) for k, v in med.items()},
           "over_local_path": {k: round(v / med["local path"], 2) for k, v in med.items()}, "runs": detail}
    shutil.rmtree(wh.parent, ignore_errors=True)
    (ROOT / "bench" / "out" / f"{tag}.json").write_text(json.dumps(res, indent=2))
    log.info("\n%s", json.dumps({k: res[k] for k in ("items_s_median", "over_local_path")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
