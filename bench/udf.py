"""The public UDF against pyspark's predict_batch_udf and the job's encode step, same data,
same model, same session settings.

    python bench/udf.py [--n 1000000] [--dim 768] [--repeat 3] [--tag udf_n1m_d768]

Makes (or reuses) bench/run.py's data and TIGER-size checkpoint, then times, alternately
and --repeat times (the median run of each is reported):

  1. udf: ``semantic_codes(ckpt)`` over ``spark.read.parquet(data)``, every row's codes
     evaluated (written to Spark's ``noop`` sink);
  2. predict_batch_udf: pyspark.ml.functions.predict_batch_udf wrapping the same model (the
     same CodeEncoder: fixed micro-batches, same threads), the same query;
  3. job encode: ``semid-assign --set input.reader=spark`` (both then receive the vectors from
     the JVM); its encode step (encode, cache, count per reason) from the manifest's timings;
  4. udf_binary (``--binary``): the UDF over a copy of the data whose embeddings are binary
     blobs of packed float32 (``binary_dtype="float32"``): the JVM passes one value per row
     instead of an array of floats;
  5. noop (the UDF's first floor): an Arrow UDF over the same column that reads every vector
     into numpy, as semid's UDF does, and returns one int per row: what Spark and Arrow cost
     before any encoding;
  6. encode floor (the second floor): semid's pure encode function (``CodeEncoder``) on rows
     already in memory, one torch thread, its rate times the tasks Spark runs at once (one per
     core, one torch thread each, as in the queries);

with ``--columnar on,off``, the queries of 1, 2, 4 and 5 run once per value of Spark's
``spark.sql.execution.arrow.pythonUDF.columnarInput.enabled`` (named ``<query>[columnar=on]``).
The report gives udf time / (noop time + encode floor time) per setting.

All in local mode on this machine's cores, one torch thread per task. Writes
bench/out/<tag>.json.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
log = logging.getLogger("bench.udf")


def session():
    from semid_udf.spark.session import build_session

    return build_session("bench-udf", {"spark.ui.enabled": "false",
                                       "spark.sql.execution.arrow.maxRecordsPerBatch": "8192"})


CPU: dict[str, list[dict[str, float]]] = {}


class QueryCpu:
    """CPU seconds each kind of process of this tree (this driver, its JVM, the Python
    workers) and each kind of JVM thread spent during one query: /proc sampled every 0.5 s
    by bench/run.py's sampler, deltas per process and thread (a process that exits between
    two samples loses at most its last half second)."""

    def __enter__(self) -> "QueryCpu":
        from run import RssSampler

        self.s = RssSampler(os.getpid())
        self.s.sample()
        self.base, self.base_threads = dict(self.s.cpu_ticks), dict(self.s.jvm_threads)
        self.s.start()
        return self

    def __exit__(self, *exc) -> None:
        from run import thread_kind

        self.s.stop_flag = True
        self.s.join()
        self.s.sample()
        tick = os.sysconf("SC_CLK_TCK")
        by_kind: dict[str, float] = {}
        for pid, ticks in self.s.cpu_ticks.items():
            k = self.s.kind.get(pid, "other")
            by_kind[k] = by_kind.get(k, 0.0) + (ticks - self.base.get(pid, 0)) / tick
        threads: dict[str, float] = {}
        for key, (tname, ticks) in self.s.jvm_threads.items():
            t = thread_kind(tname)
            threads[t] = threads.get(t, 0.0) + (ticks - self.base_threads.get(key, (tname, 0))[1]) / tick
        self.result = {"by_process": {k: round(v, 1) for k, v in sorted(by_kind.items())},
                       "jvm_threads": {k: round(v, 1) for k, v in sorted(threads.items(), key=lambda kv: -kv[1])
                                       if v >= 0.5}}


def time_query(df, name: str | None = None) -> float:
    with QueryCpu() as cpu:
        t0 = time.perf_counter()
        df.write.format("noop").mode("overwrite").save()
        s = time.perf_counter() - t0
    if name:
        CPU.setdefault(name, []).append(cpu.result)
    return s


def predict_batch_codes(ck: Path, levels: int):
    """predict_batch_udf around the same encoder: one model per UDF instance per worker."""
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.types import ArrayType, IntegerType

    def make_predict_fn():
        import numpy as np

        from semid_udf.model.checkpoint import read_checkpoint
        from semid_udf.config import EncodeConfig, PluginConfig
        from semid_udf.model.encode import CodeEncoder

        enc = CodeEncoder(read_checkpoint(ck), EncodeConfig(), PluginConfig())

        def predict(x: np.ndarray) -> np.ndarray:
            return enc(np.ascontiguousarray(x, dtype=np.float32))

        return predict

    return predict_batch_udf(make_predict_fn, return_type=ArrayType(IntegerType()), batch_size=1024,
                             input_tensor_shapes=[[DIM]])


DIM = 768


def binary_copy(data: Path, dim: int) -> Path:
    """The same rows with each embedding as one binary value of packed little-endian float32
    (``<data>_binary``, made once)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = data.with_name(data.name + "_binary")
    if (out / "_DONE").exists():
        return out
    out.mkdir(exist_ok=True)
    for f in sorted(data.glob("*.parquet")):
        t = pq.read_table(f)
        emb = t.column("embedding").combine_chunks()
        vec = np.ascontiguousarray(emb.flatten().to_numpy(zero_copy_only=False), dtype="<f4")
        if len(vec) != len(emb) * dim or emb.null_count:
            raise ValueError(f"{f}: expected {len(emb)} non-null embeddings of {dim} floats")
        offsets = np.arange(0, (len(emb) + 1) * dim * 4, dim * 4, dtype=np.int32)
        blob = pa.Array.from_buffers(pa.binary(), len(emb), [None, pa.py_buffer(offsets), pa.py_buffer(vec)])
        pq.write_table(pa.table({"item_id": t.column("item_id"), "embedding": blob}), out / f.name)
    (out / "_DONE").touch()
    return out


def noop_udf():
    """The floor of any Arrow UDF over the column: every vector read into numpy (as semid's UDF
    reads them), one int per row out."""
    from pyspark.sql.functions import arrow_udf

    @arrow_udf("int")  # its type hints are resolved in this module's globals: pyarrow is imported at the top
    def noop(emb: pa.Array) -> pa.Array:
        values = emb.flatten().to_numpy(zero_copy_only=False)  # every vector, as the UDF reads them
        return pa.array([len(values) // max(len(emb), 1)] * len(emb), pa.int32())

    return noop


COLUMNAR = "spark.sql.execution.arrow.pythonUDF.columnarInput.enabled"


def setup(data: Path, ck: Path, binary: Path | None = None, columnar: tuple[str, ...] = ()):
    """A session and the queries: every row's codes by semid's UDF, by predict_batch_udf, and
    (``binary``) by semid's UDF over the same vectors stored as binary blobs; the no-op UDF;
    each once per value of ``columnar`` (none: the session's own value)."""
    from semid_udf import read_checkpoint, semantic_codes

    spark = session()
    df = spark.read.parquet(str(data))
    ckpt = read_checkpoint(ck)
    codes = semantic_codes(ckpt)
    pbu = predict_batch_codes(ck, 4)
    noop = noop_udf()
    base = {"udf": lambda: df.select("item_id", codes("embedding").alias("c")),
            "predict_batch_udf": lambda: df.select("item_id", pbu("embedding").alias("c")),
            "noop": lambda: df.select("item_id", noop("embedding").alias("c"))}
    if binary is not None:
        blobs, codes_b = spark.read.parquet(str(binary)), semantic_codes(ckpt, binary_dtype="float32")
        base["udf_binary"] = lambda: blobs.select("item_id", codes_b("embedding").alias("c"))
    if not columnar:
        return spark, base
    queries = {}
    for value in columnar:
        for name, q in base.items():
            def with_setting(q=q, value=value):
                spark.conf.set(COLUMNAR, "true" if value == "on" else "false")
                return q()
            queries[f"{name}[columnar={value}]"] = with_setting
    return spark, queries


def encode_floor(data: Path, ck: Path, rows: int = 100_000) -> float:
    """semid's pure encode function on ``rows`` rows in memory, one torch thread: items/s,
    times one task per core (what the queries run at once)."""
    import numpy as np
    import pyarrow.parquet as pq
    import torch

    from semid_udf.config import EncodeConfig, PluginConfig
    from semid_udf.model.checkpoint import read_checkpoint
    from semid_udf.model.encode import CodeEncoder

    torch.set_num_threads(1)
    tables, have = [], 0
    for f in sorted(data.glob("*.parquet")):
        tables.append(pq.read_table(f, columns=["embedding"]))
        have += tables[-1].num_rows
        if have >= rows:
            break
    emb = np.concatenate([np.asarray(t.column("embedding").combine_chunks().flatten().to_numpy(), dtype=np.float32)
                          for t in tables]).reshape(-1, DIM)[:rows]
    enc = CodeEncoder(read_checkpoint(ck), EncodeConfig(), PluginConfig())
    enc(emb[:4096])  # warm
    t0 = time.perf_counter()
    enc(emb)
    rate = len(emb) / (time.perf_counter() - t0)
    return rate * (os.cpu_count() or 1)


def main() -> int:
    global DIM
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--tag", default=None)
    p.add_argument("--skip", default="", help="comma-separated: udf,predict_batch_udf,noop,job")
    p.add_argument("--binary", action="store_true",
                   help="also time the UDF over a copy of the data with binary float32 blobs (udf_binary)")
    p.add_argument("--columnar", default="", help="on,off: run the UDF queries with Spark's columnar-input setting "
                   "on and off (default: the session's own value, one run each)")
    p.add_argument("--data-dir", default=str(ROOT / "bench" / "data"))
    args = p.parse_args()
    columnar = tuple(filter(None, args.columnar.split(",")))
    DIM = args.dim
    skip = set(filter(None, args.skip.split(",")))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from run import job, make_checkpoint, make_data

    tag = args.tag or f"udf_n{args.n}_d{args.dim}"
    data = Path(args.data_dir) / f"emb_{args.n}_{args.dim}"
    make_data(data, args.n, args.dim)
    ck = make_checkpoint(Path(args.data_dir) / f"ckpt_{args.dim}", data, args.dim)
    out = ROOT / "bench" / "out" / tag
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)

    binary = binary_copy(data, args.dim) if args.binary else None
    spark, queries = setup(data, ck, binary, columnar)
    floor = encode_floor(data, ck) if "noop" not in skip else None
    for name, q in queries.items():  # warm-up: workers forked, models built, JIT warm
        if name.split("[")[0] not in skip:
            time_query(q().limit(20_000))
    runs: dict[str, list[float]] = {k: [] for k in [*queries, "job_encode", "job_total"]}
    job_cpu = []
    job_runs = []
    for i in range(args.repeat):
        for name, q in queries.items():
            if name.split("[")[0] in skip:
                continue
            s = time_query(q(), name)
            runs[name].append(args.n / s)
            log.info("%s run %d: %.1f s, %.0f items/s", name, i + 1, s, args.n / s)
        if "job" not in skip:
            spark.stop()  # the job starts its own JVM: give it the machine
            r = job(data, ck, out / "wh", "bench.ids", None, "cpu", ["--set", "input.reader=spark"])
            runs["job_encode"].append(args.n / r["timings"]["encode"])
            runs["job_total"].append(r["items_s"])
            job_runs.append(r)
            job_cpu.append({"by_process": r["cpu_s_by_process"], "jvm_threads": r["jvm_cpu_s_by_thread"]})
            log.info("job run %d: encode %.1f s (%.0f items/s), total %.1f s", i + 1, r["timings"]["encode"],
                     args.n / r["timings"]["encode"], r["job_s"])
            spark, queries = setup(data, ck, binary, columnar)
    res = {"tag": tag, "n": args.n, "dim": args.dim, "cpus": os.cpu_count(),
           "items_s_runs": {k: [round(v) for v in vs] for k, vs in runs.items() if vs},
           "items_s_median": {k: round(statistics.median(vs)) for k, vs in runs.items() if vs},
           "cpu_s_by_process": CPU}
    if job_cpu:
        res["cpu_s_by_process"]["job (whole run)"] = job_cpu
    m = res["items_s_median"]
    if "udf" in m and "predict_batch_udf" in m:
        res["udf_over_predict_batch_udf"] = round(m["udf"] / m["predict_batch_udf"], 2)
    if floor is not None:
        res["encode_floor_items_s"] = round(floor)
        for suffix in ([f"[columnar={v}]" for v in columnar] or [""]):
            if f"udf{suffix}" in m and f"noop{suffix}" in m:  # seconds per item: udf / (noop + encode floor)
                res[f"udf_over_floors{suffix}"] = round((1 / m[f"udf{suffix}"]) / (1 / m[f"noop{suffix}"] + 1 / floor), 2)
    if "udf" in m and "job_encode" in m:
        res["udf_over_job_encode"] = round(m["udf"] / m["job_encode"], 2)
    shutil.rmtree(out / "wh", ignore_errors=True)
    (ROOT / "bench" / "out" / f"{tag}.json").write_text(json.dumps(res, indent=2))
    log.info("\n%s", json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
