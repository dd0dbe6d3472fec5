"""bench/RESULTS.md's sections for bench/udf.py and bench/before_after.sh, from their JSON
files in bench/out/ (bench/results_md.py writes them with the rest; this prints them alone).

    python bench/udf_md.py [--udf-tag TAG ...]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


def runs(side: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(OUT.glob(f"{side}_[0-9]*.json"))]


def cpu_line(label: str, entries: list[dict]) -> str:
    """The median-by-total CPU account of a query's runs: seconds per process kind, and the
    JVM's largest thread kinds."""
    if not entries:
        return ""
    pick = sorted(entries, key=lambda e: sum(e["by_process"].values()))[len(entries) // 2]
    procs = ", ".join(f"{k} {v}" for k, v in sorted(pick["by_process"].items()) if v)
    threads = ", ".join(f"'{k}' {v}" for k, v in list(pick.get("jvm_threads", {}).items())[:4])
    return f"| {label} | {sum(pick['by_process'].values()):.1f} | {procs} | {threads} |\n"


# bench/udf.py's runs: plain, with --binary, and the floors with the columnar-input setting on and off
TAGS = ("udf_n1000000_d768", "udf_binary_n300k_d768", "udf_floor_n300k_d768")


def write(w, udf_tags: tuple[str, ...] = TAGS) -> None:
    """The sections, where their JSON files exist."""
    for tag in udf_tags:
        udf_section(w, OUT / f"{tag}.json")
    table_input_section(w, OUT / "table_input_n1000000_d768.json")
    before_after(w)


def table_input_section(w, f: Path) -> None:
    """bench/table_input.py: the job's rate by input kind."""
    if not f.exists():
        return
    r = json.loads(f.read_text())
    w(f"\n## Input kinds (`python bench/table_input.py --n {r['n']} --dim {r['dim']}`)\n\n")
    w("The same rows as a local path, as a `file:` URI, and as a Parquet metastore table read by pyarrow from\n"
      "the files its catalog names (after) or by Spark's reader (before: how every table was read). Runs\n"
      "alternate; medians; the target is 0.8 of the local path's rate.\n\n")
    w("| input | median items/s | / local path | every run |\n|---|---|---|---|\n")
    for k, med in r["items_s_median"].items():
        every = ", ".join(f"{x['items_s']:,}" for x in r["runs"][k])
        w(f"| {k} | {med:,} | {r['over_local_path'][k]} | {every} |\n")


def udf_section(w, u: Path) -> None:
    if u.exists():
        r = json.loads(u.read_text())
        columnar = sorted({k.split("=")[1].rstrip("]") for k in r["items_s_median"] if "[columnar=" in k})
        w(f"\n## `semantic_codes` vs `predict_batch_udf` (`python bench/udf.py --n {r['n']} --dim {r['dim']}"
          f"{' --binary' if any(k.startswith('udf_binary') for k in r['items_s_median']) else ''}"
          f"{' --columnar ' + ','.join(columnar) if columnar else ''}`)\n\n")
        if columnar:
            w("`columnar=on` is Spark 4.3's default for `spark.sql.execution.arrow.pythonUDF.columnarInput.enabled`\n"
              "(before), `off` what the sessions semid builds set (after).\n")
        w("Local mode, one torch thread per task. Runs alternate; the median run of each is shown, every run\n"
          "after it. 'job encode' is the encode step of `semid-assign --set input.reader=spark` (the JVM hands\n"
          "the vectors to Python, as it does to both UDFs); 'udf_binary' is the UDF over the same vectors\n"
          "stored as binary blobs of packed float32.\n\n")
        w("| query | median items/s | every run |\n|---|---|---|\n")
        for k, med in r["items_s_median"].items():
            w(f"| {k} | {med:,} | {', '.join(f'{v:,}' for v in r['items_s_runs'][k])} |\n")
        for key, label in (("udf_over_predict_batch_udf", "udf / predict_batch_udf"),
                           ("udf_over_job_encode", "udf / job encode")):
            if key in r:
                w(f"\n- {label}: {r[key]}")
        if "encode_floor_items_s" in r:
            w(f"\n- the floors: 'noop' is an Arrow UDF over the same column that reads every vector into numpy and\n"
              f"  returns one int per row; the encode floor is semid's pure encode function on rows in memory, one\n"
              f"  torch thread, times {r['cpus']} tasks: {r['encode_floor_items_s']:,} items/s")
            for k, v in r.items():
                if k.startswith("udf_over_floors"):
                    w(f"\n- udf time / (noop time + encode floor time){k.removeprefix('udf_over_floors')}: {v} "
                      "(target: at most 1.1)")
        m = r["items_s_median"]
        if "udf_binary" in m and "udf" in m:
            w(f"\n- udf_binary / udf: {m['udf_binary'] / m['udf']:.2f}; udf_binary / predict_batch_udf: "
              f"{m['udf_binary'] / m['predict_batch_udf']:.2f}")
        w("\n\nCPU seconds of each query (the run with the median total; processes and the JVM's busiest thread\n"
          "kinds, names cut at 15 characters by /proc):\n\n| query | CPU s | by process | JVM threads |\n|---|---|---|---|\n")
        for k, entries in r.get("cpu_s_by_process", {}).items():
            w(cpu_line(k, entries))


def before_after(w) -> None:
    before, after = runs("before"), runs("after")
    if before and after:
        w("\n## The job before and after (`bash bench/before_after.sh REV`, 1M x 768, rounds alternate)\n\n")
        w("| side | job items/s (every run) | median | ceiling median | job/ceiling |\n|---|---|---|---|---|\n")
        for side, rs in (("before", before), ("after", after)):
            job = [x["job"]["items_s"] for x in rs]
            ceil = [x["ceiling"]["items_s"] for x in rs]
            w(f"| {side} | {', '.join(f'{v:,.0f}' for v in job)} | {statistics.median(job):,.0f} | "
              f"{statistics.median(ceil):,.0f} | {statistics.median(job) / statistics.median(ceil):.2f} |\n")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--udf-tag", action="append", help=f"bench/udf.py's --tag (default: {', '.join(TAGS)})")
    write(sys.stdout.write, tuple(p.parse_args().udf_tag or TAGS))


if __name__ == "__main__":
    main()
