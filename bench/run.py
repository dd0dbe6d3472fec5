"""Throughput of semid against the ceiling and an origin-style baseline, on the same data.

    python bench/run.py [--n 1000000] [--dim 768] [--master local[*]] [--device cpu|cuda]
                        [--baseline-n 200000] [--skip ceiling,baseline,job,noop] [--tag NAME]
                        [--job-set KEY=VALUE ...] [--stages] [--repeat K] [--cpus LIST]

Makes its own deterministic data (bench/data/, git-ignored), a TIGER-size model
(D -> 512 -> 256 -> 128 -> 32, 4 x 256; trained for one epoch on a 20k sample, which costs
the same arithmetic as a fully trained one), then measures items/s of:
  1. ceiling: pyarrow reads the Parquet, then the pure encode function on the numpy matrix;
  2. origin-style: one process, batches of 1024, a per-item copy loop into a tensor, a dict
     of lists, one JSON file at the end (on the first --baseline-n items: it is a rate);
  3. job: `semid-assign` run directly (local mode, Spark's defaults) from Parquet to the table;
  4. noop: the same job with a model that does no arithmetic.
Prints a table and writes bench/out/<tag>.json, with peak RSS of the driver (JVM and Python)
and of the Python workers sampled from /proc during the jobs.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
log = logging.getLogger("bench")


def make_data(path: Path, n: int, dim: int, chunk: int = 100_000) -> None:
    if (path / "_DONE").exists():
        return
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    rng = np.random.default_rng(2026)
    centers = rng.standard_normal(size=(1024, dim), dtype=np.float32)
    for i, start in enumerate(range(0, n, chunk)):
        k = min(chunk, n - start)
        x = rng.standard_normal(size=(k, dim), dtype=np.float32)
        x *= 0.5
        x += centers[rng.integers(0, 1024, k)]
        emb = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), dim).cast(pa.list_(pa.float32()))
        ids = pa.array(np.arange(start, start + k, dtype=np.int64))
        pq.write_table(pa.table({"item_id": ids, "embedding": emb}), path / f"part-{i:05d}.parquet",
                       row_group_size=50_000)
    (path / "_DONE").write_text(str(n))
    log.info("data: %d x %d under %s", n, dim, path)


def make_checkpoint(path: Path, data: Path, dim: int) -> Path:
    from semid_udf.model.checkpoint import save_checkpoint
    from semid_udf.config import ModelConfig, TrainConfig
    from semid_udf.model.train import fit

    if (path / "config.json").exists():
        return path
    t = ds.dataset(data, format="parquet").head(20_000)
    x = t.column("embedding").combine_chunks().flatten().to_numpy().reshape(-1, dim)
    model, meta = fit(x, ModelConfig(hidden_dims=(512, 256, 128), latent_dim=32, levels=4, codebook_size=256),
                      TrainConfig(epochs=1, kmeans_iters=5, seed=0))
    save_checkpoint(model, model.cfg, path, training=meta)
    return path


def read_matrix(data: Path, dim: int, limit: int | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Read ids and a float32 [n, dim] matrix, chunk by chunk (one list<float> array cannot
    hold more than 2^31 values, so the chunks are never combined)."""
    t0 = time.perf_counter()
    table = ds.dataset(data, format="parquet").to_table()
    if limit:
        table = table.slice(0, limit)
    x = np.empty((table.num_rows, dim), dtype=np.float32)
    row = 0
    for chunk in table.column("embedding").chunks:
        k = len(chunk)
        x[row:row + k] = chunk.flatten().to_numpy().reshape(k, dim)
        row += k
    return table.column("item_id").to_numpy(), x, time.perf_counter() - t0


def ceiling(data: Path, ck: Path, dim: int, device: str) -> dict:
    from semid_udf.model.checkpoint import read_checkpoint
    from semid_udf.config import EncodeConfig, PluginConfig
    from semid_udf.model.encode import CodeEncoder

    cpu0 = time.process_time()  # every thread of this process: pyarrow's readers, torch's threads
    ids, x, read_s = read_matrix(data, dim)
    enc = CodeEncoder(read_checkpoint(ck), EncodeConfig(device=device, threads=os.cpu_count() or 1), PluginConfig())
    enc(x[:4096])  # warm-up
    t0 = time.perf_counter()
    enc(x)
    encode_s = time.perf_counter() - t0
    n = len(x)
    return {"items": n, "read_s": round(read_s, 3), "encode_s": round(encode_s, 3),
            "cpu_s": round(time.process_time() - cpu0, 1),  # includes the 4,096-row warm-up
            "read_items_s": n / read_s, "encode_items_s": n / encode_s, "items_s": n / (read_s + encode_s)}


def origin_baseline(data: Path, ck: Path, dim: int, n: int, out: Path, device: str) -> dict:
    """What evalu/infer.py did, faithfully: per-item copies, a dict of lists, one JSON file."""
    import torch

    from semid_udf.model.checkpoint import load_checkpoint

    model, _ = load_checkpoint(ck)
    dev = torch.device("cuda" if device == "cuda" else "cpu")
    model = model.to(dev)
    t0 = time.perf_counter()
    ids, x, _ = read_matrix(data, dim, limit=n)
    result: dict[str, list[int]] = {}
    bs = 1024
    with torch.no_grad():
        for start in range(0, len(x), bs):
            rows = x[start:start + bs]
            batch = torch.zeros((len(rows), dim))
            for i in range(len(rows)):  # the per-item copy loop
                batch[i] = torch.tensor(rows[i])
            semantic_id_list = list(model.encode(batch.to(dev)))  # a list of per-item tensors
            for i, sid in enumerate(semantic_id_list):
                result[str(int(ids[start + i]))] = [int(c) for c in sid.cpu()]
    with open(out, "w") as f:
        json.dump(result, f)
    s = time.perf_counter() - t0
    return {"items": len(x), "seconds": round(s, 3), "items_s": len(x) / s, "json_bytes": out.stat().st_size}


class RssSampler(threading.Thread):
    """Peak RSS of the job's process tree: driver JVM, driver Python, Python workers."""

    def __init__(self, root_pid: int):
        super().__init__(daemon=True)
        self.root, self.stop_flag = root_pid, False
        self.cpu_ticks: dict[int, int] = {}
        self.kind: dict[int, str] = {}
        self.jvm_threads: dict[tuple[int, str], tuple[str, int]] = {}  # (pid, tid) -> (thread name, ticks)
        self.peak = {"driver_python_mb": 0.0, "driver_jvm_mb": 0.0, "python_worker_max_mb": 0.0,
                     "python_workers_sum_mb": 0.0}

    def tree(self) -> list[int]:
        kids: dict[int, list[int]] = {}
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                    kids.setdefault(ppid, []).append(int(d.name))
                except (OSError, IndexError, ValueError):
                    continue
        out, todo = [], [self.root]
        while todo:
            p = todo.pop()
            out.append(p)
            todo.extend(kids.get(p, []))
        return out

    def sample_threads(self, pid: int) -> None:
        """CPU ticks of each JVM thread (JIT compilers, task threads, the driver's py4j thread)."""
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return
        for tid in tids:
            try:
                st = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            except OSError:
                continue
            name = st[st.index("(") + 1:st.rindex(")")]
            f = st.rsplit(")", 1)[1].split()
            self.jvm_threads[(pid, tid)] = (name, int(f[11]) + int(f[12]))

    def jvm_cpu_by_thread(self) -> dict[str, float]:
        """CPU seconds per JVM thread kind (names without their numbers), largest first."""
        tick = os.sysconf("SC_CLK_TCK")
        agg: dict[str, float] = {}
        for name, ticks in self.jvm_threads.values():
            key = thread_kind(name)
            agg[key] = agg.get(key, 0.0) + ticks / tick
        return {k: round(v, 1) for k, v in sorted(agg.items(), key=lambda kv: -kv[1]) if v >= 0.5}

    def sample(self) -> None:
        """One pass over the tree: CPU ticks, kind and RSS of each process."""
        workers = []
        for pid in self.tree():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                self.cpu_ticks[pid] = int(stat[11]) + int(stat[12])  # utime + stime
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                           if line.startswith("VmRSS:")) / 1024
            except (OSError, StopIteration):
                continue
            self.kind[pid] = process_kind(cmd, pid == self.root)
            if self.kind[pid] == "driver_jvm":
                self.sample_threads(pid)
                self.peak["driver_jvm_mb"] = max(self.peak["driver_jvm_mb"], rss)
            elif self.kind[pid] == "python_workers":
                workers.append(rss)
            elif pid == self.root:
                self.peak["driver_python_mb"] = max(self.peak["driver_python_mb"], rss)
        if workers:
            self.peak["python_worker_max_mb"] = max(self.peak["python_worker_max_mb"], max(workers))
            self.peak["python_workers_sum_mb"] = max(self.peak["python_workers_sum_mb"], sum(workers))

    def run(self) -> None:
        while not self.stop_flag:
            self.sample()
            time.sleep(0.5)


def thread_kind(name: str) -> str:
    """A JVM thread's name without its number ('Executor task launch worker for task 12' and
    the like, as /proc cuts them at 15 characters)."""
    return name.rstrip("0123456789#-+ ").strip() or name


def process_kind(cmd: str, is_root: bool) -> str:
    """driver_jvm, python_workers (Spark's daemon or semid's, their forks, plain workers),
    driver_python (the root) or other."""
    exe = cmd.split(" ")[0]
    if "java" in exe:
        return "driver_jvm"
    if any(m in cmd for m in ("pyspark.daemon", "semid_udf.daemon", "pyspark.worker")):
        return "python_workers"
    return "driver_python" if is_root else "other"


def job(data: Path, ck: Path, wh: Path, table: str, master: str | None, device: str, extra: list[str],
        cpus: str | None = None, source: list[str] | None = None) -> dict:
    """One semid-assign run over ``data`` (or ``source``: the input flags, e.g. --input-table T)."""
    cmd = [str(Path(sys.executable).parent / "semid-assign"), *(source or ["--input", str(data)]), "--checkpoint",
           str(ck), "--table", table, "--warehouse", str(wh), "--set", f"encode.device={device}", *extra]
    if master:
        cmd += ["--set", f"spark.spark.master={master}"]
    if cpus:  # the job, its JVM and its Python workers may use only these CPUs
        cmd = ["taskset", "-c", cpus, *cmd]
    # this tree's semid (not whichever is installed), and bench/ for the no-op model's plugin
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'bench'}")
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = RssSampler(p.pid)
    sampler.start()
    out, err = p.communicate()
    wall = time.perf_counter() - t0
    sampler.stop_flag = True
    tick = os.sysconf("SC_CLK_TCK")
    cpu_s = sum(sampler.cpu_ticks.values()) / tick  # driver, JVM, workers (last sample)
    cpu_by_kind: dict[str, float] = {}
    for pid, ticks in sampler.cpu_ticks.items():
        kind = sampler.kind.get(pid, "other")
        cpu_by_kind[kind] = round(cpu_by_kind.get(kind, 0.0) + ticks / tick, 1)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {err[-3000:]}")
    runs = ds.dataset(wh / f"{table.split('.')[0]}.db" / f"{table.split('.')[1]}_manifest", format="parquet").to_table()
    last = max((r for r in runs.to_pylist() if r["status"] == "complete"), key=lambda r: r["finished_at"])
    details = json.loads(last["details"])
    total = details["timings"]["total"]
    return {"items": last["rows_out"], "wall_s": round(wall, 3), "cpu_s": round(cpu_s, 1),
            "cores_busy": round(cpu_s / wall, 2), "cpu_s_by_process": cpu_by_kind,
            "jvm_cpu_s_by_thread": sampler.jvm_cpu_by_thread(), "job_s": total, "items_s": last["rows_out"] / total,
            "items_s_wall": last["rows_out"] / wall, "timings": details["timings"], "peak_rss": sampler.peak}


def spark_stages(events_dir: Path) -> list[dict]:
    """Spark's own account of a run (its event log): each job with its description, and each
    stage with its tasks, start and end (seconds after the application started), the summed
    task run time and the summed executor CPU time (JVM threads and what they wait on)."""
    logs = sorted(events_dir.glob("eventlog_v2_*/events_*"))
    if len(logs) != 1:
        raise RuntimeError(f"{events_dir}: expected the event log of one application, got {logs}")
    t0, jobs, stages = None, {}, {}
    with open(logs[0]) as f:
        for line in f:
            e = json.loads(line)
            kind = e["Event"]
            if kind == "SparkListenerApplicationStart":
                t0 = e["Timestamp"]
            elif kind == "SparkListenerJobStart":
                desc = (e.get("Properties") or {}).get("spark.job.description") or ""
                jobs[e["Job ID"]] = {"job": e["Job ID"], "description": desc.split(": ", 1)[-1],
                                     "stage_ids": e["Stage IDs"]}
            elif kind == "SparkListenerStageCompleted":
                si = e["Stage Info"]
                acc = {a["Name"]: a.get("Value") for a in si.get("Accumulables", [])}
                stages[si["Stage ID"]] = {
                    "stage": si["Stage ID"], "tasks": si["Number of Tasks"],
                    "start_s": round((si["Submission Time"] - t0) / 1000, 1),
                    "end_s": round((si["Completion Time"] - t0) / 1000, 1),
                    "task_run_s": round(int(acc.get("internal.metrics.executorRunTime", 0)) / 1000, 1),
                    "task_cpu_s": round(int(acc.get("internal.metrics.executorCpuTime", 0)) / 1e9, 1)}
    out = []
    for j in sorted(jobs.values(), key=lambda j: j["job"]):
        for sid in j.pop("stage_ids"):
            if sid in stages:  # stages skipped (their shuffle output reused) never complete
                out.append({**j, **stages[sid]})
    return out


def median_run(runs: list[dict]) -> dict:
    """The run with the median items/s (the lower middle one of an even number)."""
    return sorted(runs, key=lambda r: r["items_s"])[(len(runs) - 1) // 2]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--master", default=None, help="Spark master for the job runs (default: Spark's own, local[*])")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--baseline-n", type=int, default=200_000)
    p.add_argument("--skip", default="", help="comma-separated: ceiling,baseline,job,noop")
    p.add_argument("--tag", default=None)
    p.add_argument("--job-set", action="append", default=[], metavar="KEY=VALUE",
                   help="an extra --set for the job runs (repeatable), e.g. input.reader=spark")
    p.add_argument("--stages", action="store_true",
                   help="record Spark's event log of the timed job and put its jobs and stages in the JSON")
    p.add_argument("--cpus", default=None, metavar="LIST",
                   help="run the jobs on these CPUs only (taskset -c LIST), e.g. 0: a one-core machine")
    p.add_argument("--repeat", type=int, default=1,
                   help="measure the ceiling and the job this many times, alternately, and report the median run of each")
    p.add_argument("--data-dir", default=str(ROOT / "bench" / "data"))
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    skip = set(filter(None, args.skip.split(",")))
    tag = args.tag or f"n{args.n}_d{args.dim}_{(args.master or 'default').replace('[', '').replace(']', '')}_{args.device}"
    data = Path(args.data_dir) / f"emb_{args.n}_{args.dim}"
    out = ROOT / "bench" / "out" / tag
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    make_data(data, args.n, args.dim)
    ck = make_checkpoint(Path(args.data_dir) / f"ckpt_{args.dim}", data, args.dim)
    res: dict = {"tag": tag, "n": args.n, "dim": args.dim, "master": args.master or "default (local[*])",
                 "device": args.device, "cpus": os.cpu_count(), "job_cpus": args.cpus or "all"}
    if "baseline" not in skip:
        log.info("2/4 origin-style baseline on %d items", min(args.baseline_n, args.n))
        res["origin"] = origin_baseline(data, ck, args.dim, min(args.baseline_n, args.n), out / "semantic_id_dict.json",
                                        args.device)
        (out / "semantic_id_dict.json").unlink()
    extra = [a for kv in args.job_set for a in ("--set", kv)]
    if extra:
        res["job_settings"] = args.job_set
    if not {"job", "noop"} <= skip:
        # A deployment has its metastore already: create this run's (embedded Derby) once,
        # untimed, with a tiny run, so the timed runs measure the job and not Derby's setup.
        log.info("warm-up: creating the warehouse's metastore with a 2,000-row run")
        warm = Path(args.data_dir) / f"emb_2000_{args.dim}"
        make_data(warm, 2000, args.dim)
        res["warmup"] = job(warm, ck, out / "wh", "bench.warmup", args.master, args.device, extra, args.cpus)
    # The ceiling and the job alternately, --repeat times: this machine's speed drifts by tens
    # of percent between minutes, so each is reported as its median run, with every run listed.
    runs: dict[str, list[dict]] = {"ceiling": [], "job": []}
    for i in range(args.repeat):
        if "ceiling" not in skip:
            log.info("1/4 ceiling (run %d of %d)", i + 1, args.repeat)
            runs["ceiling"].append(ceiling(data, ck, args.dim, args.device))
        if "job" not in skip:
            log.info("3/4 semid-assign (run %d of %d)", i + 1, args.repeat)
            events = out / f"events_{i}"
            traced = []
            if args.stages:
                events.mkdir()
                traced = ["--set", "spark.spark.eventLog.enabled=true", "--set",
                          f"spark.spark.eventLog.dir={events.as_uri()}", "--set", "spark.spark.eventLog.compress=false"]
            r = job(data, ck, out / "wh", "bench.ids", args.master, args.device, extra + traced, args.cpus)
            if args.stages:
                r["stages"] = spark_stages(events)
            runs["job"].append(r)
    for key, got in runs.items():
        if got:
            res[key] = median_run(got)
            res[f"{key}_items_s_runs"] = [round(r["items_s"]) for r in got]
    if "noop" not in skip:
        log.info("4/4 semid-assign with a no-op model")
        res["noop"] = job(data, ck, out / "wh", "bench.noop", args.master, args.device,
                          extra + ["--set", "plugin.factory=noop_model:build", "--set", "plugin.layout=batch_major"], args.cpus)
    shutil.rmtree(out / "wh", ignore_errors=True)
    if "job" in res and "ceiling" in res:
        res["job_over_ceiling"] = res["job"]["items_s"] / res["ceiling"]["items_s"]
    if "job" in res and "origin" in res:
        res["job_over_origin"] = res["job"]["items_s"] / res["origin"]["items_s"]
    (ROOT / "bench" / "out" / f"{tag}.json").write_text(json.dumps(res, indent=2))
    rows = [("ceiling (pyarrow read + encode)", res.get("ceiling", {}).get("items_s")),
            ("  read only", res.get("ceiling", {}).get("read_items_s")),
            ("  encode only", res.get("ceiling", {}).get("encode_items_s")),
            ("origin-style loop + JSON", res.get("origin", {}).get("items_s")),
            ("semid-assign (job time)", res.get("job", {}).get("items_s")),
            ("semid-assign (wall, with JVM start)", res.get("job", {}).get("items_s_wall")),
            ("semid-assign, no-op model", res.get("noop", {}).get("items_s"))]
    lines = [f"{tag}: N={args.n} D={args.dim} master={res['master']} device={args.device}"]
    lines += [f"  {name:<38} {v:>12,.0f} items/s" for name, v in rows if v]
    for k in ("job_over_ceiling", "job_over_origin"):
        if k in res:
            lines.append(f"  {k:<38} {res[k]:>12.2f}")
    if "job" in res:
        lines.append(f"  peak RSS (MB) {json.dumps({k: round(v) for k, v in res['job']['peak_rss'].items()})}")
    log.info("\n%s", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
