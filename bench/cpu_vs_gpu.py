"""How many items get other codes on the GPU than on the CPU (same model, fp32, TF32 off)."""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=768)
    a = p.parse_args()
    from semid_udf.model.checkpoint import read_checkpoint
    from semid_udf.config import EncodeConfig, PluginConfig
    from semid_udf.model.encode import CodeEncoder

    t = ds.dataset(a.data, format="parquet").head(a.rows)
    x = t.column("embedding").combine_chunks().flatten().to_numpy().reshape(-1, a.dim)
    blob = read_checkpoint(a.ckpt)
    cpu = CodeEncoder(blob, EncodeConfig(device="cpu", threads=8), PluginConfig())(x)
    gpu = CodeEncoder(blob, EncodeConfig(device="cuda"), PluginConfig())(x)
    diff = (cpu != gpu).any(axis=1)
    first_level = int(np.argmax((cpu != gpu).any(axis=0))) if diff.any() else None
    print(json.dumps({"rows": len(x), "items_with_other_codes": int(diff.sum()), "fraction": float(diff.mean()),
                      "first_level_that_differs": first_level}))


if __name__ == "__main__":
    main()
