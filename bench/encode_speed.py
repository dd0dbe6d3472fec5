"""Pure encode speed (items/s, one torch thread) of a checkpoint at several beam widths.

    python bench/encode_speed.py [--checkpoint bench/data/ckpt_768] [--beams 1,2,5] [--rows 60000]

The same weights are encoded with ``model.beam`` set to each width (random inputs of the
model's dimension; the speed does not depend on the values). Prints one line per width.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(ROOT / "bench" / "data" / "ckpt_768"))
    p.add_argument("--beams", default="1,2,5")
    p.add_argument("--rows", type=int, default=60_000)
    p.add_argument("--repeats", type=int, default=3, help="best of this many passes")
    args = p.parse_args()
    from semid_udf.model.checkpoint import CheckpointBlob, read_checkpoint
    from semid_udf.config import EncodeConfig, PluginConfig
    from semid_udf.model.encode import CodeEncoder

    blob = read_checkpoint(args.checkpoint)
    x = np.random.default_rng(0).standard_normal((args.rows, int(blob.model["input_dim"])), dtype=np.float32)
    for beam in (int(b) for b in args.beams.split(",")):
        config = copy.deepcopy(blob.config)
        if config["model"].get("beam", 1) != beam:  # checkpoints without the key encode greedily
            config["model"]["beam"] = beam
        enc = CodeEncoder(CheckpointBlob(config=config, weights=blob.weights), EncodeConfig(threads=1), PluginConfig())
        enc(x[:2048])  # warm-up
        best = min(_timed(enc, x) for _ in range(args.repeats))
        print(f"beam {beam}: {args.rows / best:,.0f} items/s (one thread, {args.rows} rows, best of {args.repeats})")
    return 0


def _timed(enc, x) -> float:
    t0 = time.perf_counter()
    enc(x)
    return time.perf_counter() - t0


if __name__ == "__main__":
    sys.exit(main())
