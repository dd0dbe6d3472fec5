"""The job's write stage in parts, per 1M rows, and a cheaper form of it tried.

    python bench/write_stage.py [--n 1000000] [--levels 4] [--codebook 256] [--repeat 3] [--tag write_n1m]

The stage starts from the encoded rows the job caches (item_id, sid_0..sid_{L-1},
embedding_hash; no vectors). Here they are made in the JVM, no model involved: codes drawn
so that code tuples repeat as in a real catalogue (a skewed cluster id per item, its digits
in base --codebook as the codes: a few large buckets, many of one item), cached once and
counted. Then, alternately and --repeat times, each variant runs over the cache, timed, with
the CPU seconds of this driver, its JVM and the Python workers sampled from /proc
(bench/udf.py's QueryCpu):

  scan         the cache read into Spark's noop sink: the floor of every variant
  range        + repartitionByRange(files, packed code key), as the job does (its sampling
               passes included)
  sort         + sort within each partition by (key, item_id)
  suffix       + the suffix as the job computes it (row_number over the key, by item_id):
               semid_udf.spark.ids.with_suffix itself
  semantic_id  + the semantic_id string (semid_udf.spark.ids.semantic_id): the job's rows, to noop
  parquet      the same rows into Parquet files: the job's write
  python       the cheaper form tried: range partitioning and a sort within partitions in the
               JVM, then the suffix and semantic_id computed in the Python tasks over the runs
               of equal codes (mapInArrow), into Parquet

The python variant's files are checked to hold exactly the parquet variant's rows. Per-part
costs are differences of the medians (range - scan, sort - range, ...). Writes
bench/out/<tag>.json; `--md` prints the RESULTS.md section from it.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
log = logging.getLogger("bench.write_stage")


def encoded_rows(spark, n: int, levels: int, codebook: int):
    """n rows as the job caches them before the write: ids, codes, hashes."""
    from pyspark.sql import functions as F

    df = spark.range(n).withColumnRenamed("id", "item_id")
    # a skewed cluster id: its square concentrates items on low ids (large buckets), the long
    # tail is buckets of one or two items; the digits of a hash of it are the codes
    u = (F.pmod(F.xxhash64("item_id"), F.lit(1 << 30)).cast("double") / float(1 << 30))
    cluster = (F.pow(u, 2) * F.lit(n // 2)).cast("long")
    h = F.abs(F.xxhash64(cluster, F.lit(7)))
    cols = [F.pmod(F.shiftright(h, 8 * i), F.lit(codebook)).cast("int").alias(f"sid_{i}") for i in range(levels)]
    return df.select("item_id", *cols, F.xxhash64("item_id", F.lit(1)).alias("embedding_hash"))


def python_suffix(levels: int, keys: list[str]):
    """For mapInArrow over a partition sorted by (keys, item_id): sid_suffix 0, 1, 2, ... within
    each run of equal keys (runs carry over batch boundaries) and the semantic_id string."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    sids = [f"sid_{i}" for i in range(levels)]

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        last: list[Any] | None = None  # the previous batch's last key
        carry = 0  # rows of that key's run in earlier batches
        for b in batches:
            n = b.num_rows
            if n == 0:
                continue
            cols = [b.column(k).to_numpy() for k in keys]
            start = np.zeros(n, dtype=bool)
            for c in cols:
                start[1:] |= c[1:] != c[:-1]
            continues = last is not None and all(c[0] == v for c, v in zip(cols, last))
            start[0] = not continues
            idx = np.arange(n)
            run_start = np.maximum.accumulate(np.where(start, idx, 0))
            suffix = idx - run_start
            if continues:
                suffix[run_start == 0] += carry  # rows before the batch's first new run
            carry = int(suffix[-1]) + 1
            last = [c[-1] for c in cols]
            sfx = pa.array(suffix.astype(np.int32))
            text = pc.binary_join_element_wise(*[pc.cast(b.column(s), pa.string()) for s in sids],
                                               pc.cast(sfx, pa.string()), "-")
            yield pa.RecordBatch.from_arrays(
                [b.column("item_id"), *[b.column(s) for s in sids], sfx, text, b.column("embedding_hash")],
                names=["item_id", *sids, "sid_suffix", "semantic_id", "embedding_hash"])

    return run


def variants(spark, cached, levels: int, codebook: int, files: int, out: Path) -> dict[str, Any]:
    from semid_udf.spark import ids as ix
    from semid_udf.spark import schema as sc

    key = ix.bucket_key(levels, codebook)
    assert key is not None, "the bench packs the codes into one key"
    keyed = cached.withColumn("_bucket", key)
    ranged = keyed.repartitionByRange(files, "_bucket")
    sid_cols = sc.sid_cols(levels)
    job_rows = ix.with_suffix(cached, levels, codebook, files).withColumn("semantic_id", ix.semantic_id(levels))
    py_schema = sc.Schema((("item_id", "bigint"), *[(c, "int") for c in sid_cols], ("sid_suffix", "int"),
                           ("semantic_id", "string"), ("embedding_hash", "bigint")))
    py_rows = (ranged.sortWithinPartitions("_bucket", "item_id").drop("_bucket")
               .mapInArrow(python_suffix(levels, sid_cols), py_schema.spark()))

    def noop(df):
        return lambda: df.write.format("noop").mode("overwrite").save()

    def parquet(df, name):
        def write():
            shutil.rmtree(out / name, ignore_errors=True)
            df.write.parquet(str(out / name))
        return write

    return {
        "scan": noop(cached),
        "range": noop(ranged),
        "sort": noop(ranged.sortWithinPartitions("_bucket", "item_id")),
        "suffix": noop(ix.with_suffix(cached, levels, codebook, files)),
        "semantic_id": noop(job_rows),
        "parquet": parquet(job_rows, "parquet"),
        "python": parquet(py_rows.select(*job_rows.columns), "python"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--levels", type=int, default=4)
    ap.add_argument("--codebook", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tag", default=None)
    ap.add_argument("--md", metavar="TAG", help="print the RESULTS.md section of bench/out/TAG.json and exit")
    a = ap.parse_args()
    if a.md:
        print(markdown(json.loads((ROOT / "bench" / "out" / f"{a.md}.json").read_text())))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from pyspark import StorageLevel

    from semid_udf.spark import ids as ix
    from semid_udf.spark.session import build_session
    from udf import QueryCpu

    spark = build_session("bench-write", {"spark.ui.enabled": "false"})
    cores = spark.sparkContext.defaultParallelism
    files = ix.output_files(a.n, cores)
    cached = encoded_rows(spark, a.n, a.levels, a.codebook).persist(StorageLevel.MEMORY_AND_DISK)
    t0 = time.perf_counter()
    rows = cached.count()
    buckets = cached.groupBy(*[f"sid_{i}" for i in range(a.levels)]).count()
    sizes = buckets.agg({"count": "max"}).first()[0], buckets.count()
    log.info("%d rows cached in %.1f s; %d code tuples, the largest of %d items; %d output files", rows,
             time.perf_counter() - t0, sizes[1], sizes[0], files)
    out = Path(tempfile.mkdtemp(prefix="semid-write-stage-"))
    try:
        runs = variants(spark, cached, a.levels, a.codebook, files, out)
        for name, fn in runs.items():  # a warm-up of each (JIT, Python workers)
            fn()
        times: dict[str, list[float]] = {k: [] for k in runs}
        cpu: dict[str, list[dict[str, Any]]] = {k: [] for k in runs}
        for r in range(a.repeat):
            for name, fn in runs.items():
                with QueryCpu() as c:
                    t = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - t)
                cpu[name].append(c.result)
                log.info("round %d %-12s %6.2f s  %s", r + 1, name, times[name][-1], c.result["by_process"])
        a_rows = spark.read.parquet(str(out / "parquet"))
        b_rows = spark.read.parquet(str(out / "python"))
        same = a_rows.exceptAll(b_rows).count() == 0 and b_rows.exceptAll(a_rows).count() == 0
        log.info("python variant's rows equal the job's: %s", same)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    res = {"n": a.n, "levels": a.levels, "codebook": a.codebook, "files": files, "cores": cores,
           "code_tuples": sizes[1], "largest_bucket": sizes[0], "same_rows": same,
           "runs": times, "cpu": cpu,
           "median_s": {k: statistics.median(v) for k, v in times.items()},
           "median_cpu": {k: median_cpu(v) for k, v in cpu.items()}}
    tag = a.tag or f"write_n{a.n}"
    (ROOT / "bench" / "out").mkdir(exist_ok=True)
    (ROOT / "bench" / "out" / f"{tag}.json").write_text(json.dumps(res, indent=1))
    print(markdown(res))


def median_cpu(results: list[dict[str, Any]]) -> dict[str, float]:
    kinds = sorted({k for r in results for k in r["by_process"]})
    return {k: statistics.median(r["by_process"].get(k, 0.0) for r in results) for k in kinds}


def markdown(res: dict[str, Any]) -> str:
    per = 1_000_000 / res["n"]
    med, mcpu = res["median_s"], res["median_cpu"]
    steps = ["scan", "range", "sort", "suffix", "semantic_id", "parquet"]
    lines = [f"{res['n']:,} rows, {res['levels']} levels x {res['codebook']} codes, {res['code_tuples']:,} code "
             f"tuples (largest {res['largest_bucket']}), {res['files']} output files, {res['cores']} cores; "
             f"medians of {len(res['runs']['scan'])} alternating rounds; the python variant's rows equal the "
             f"job's: {res['same_rows']}.", "",
             "| variant | wall s | JVM CPU s | Python workers CPU s | wall s per 1M rows | added by this part, wall s per 1M |",
             "|---|---|---|---|---|---|"]
    prev = None
    for k in steps + ["python"]:
        added = "" if prev is None or k == "python" else f"{(med[k] - med[prev]) * per:.2f}"
        lines.append(f"| {k} | {med[k]:.2f} | {mcpu[k].get('driver_jvm', 0):.1f} | "
                     f"{mcpu[k].get('python_workers', 0):.1f} | {med[k] * per:.2f} | {added} |")
        if k in steps:
            prev = k
    return "\n".join(lines)


if __name__ == "__main__":
    main()
