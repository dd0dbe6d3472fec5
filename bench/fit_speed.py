"""How long semid-train's fit takes for each model.kind on the same sample (driver side only).

    OMP_NUM_THREADS=1 .venv/bin/python bench/fit_speed.py --rows 50000 [--threads 1] [--repeat 2]
    python3 bench/fit_speed.py --rows 200000 --device cuda      # rqkmeans on a GPU (train.device)

Fits ``rqvae`` and ``rqkmeans`` (the defaults of ``JobConfig``, refinement included) on the
first ``--rows`` rows of ``bench/data/minilm.npy``, alternating the kinds ``--repeat`` times,
and prints one JSON line per fit (seconds, rows per second) and the medians. The RQ-VAE
always fits on the CPU; ``--device`` applies to residual k-means.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT / "bench" / "data" / "minilm.npy"))
    p.add_argument("--rows", type=int, default=50_000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--device", default="cpu", help="train.device for rqkmeans: cpu, cuda or auto")
    args = p.parse_args()
    import torch

    from semid_udf.config import JobConfig
    from semid_udf.model.train import fit

    x = np.load(args.data)[:args.rows]
    cfg = JobConfig()
    out: dict[str, list[float]] = {"rqvae": [], "rqkmeans": []}
    for _ in range(args.repeat):
        for kind in out:
            train = replace(cfg.train, threads=args.threads, sample_size=len(x), device=args.device)
            t = time.perf_counter()
            fit(x, replace(cfg.model, kind=kind), train)
            s = time.perf_counter() - t
            out[kind].append(s)
            print(json.dumps({"kind": kind, "rows": len(x), "dim": int(x.shape[1]), "threads": args.threads,
                              "device": args.device if kind == "rqkmeans" else "cpu", "seconds": round(s, 1),
                              "rows_per_s": round(len(x) / s)}), flush=True)
    print(json.dumps({"median_seconds": {k: round(statistics.median(v), 1) for k, v in out.items()},
                      "torch": torch.__version__, "rows": len(x)}))


if __name__ == "__main__":
    main()
