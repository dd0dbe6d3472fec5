"""Train the example RQ-VAE on a synthetic clustered catalogue and save it the way training
scripts usually do: ``torch.save({"model": state_dict, "optimizer": ..., "epoch": ...})``.

    python train.py --out model.pt [--catalogue catalogue.parquet] [--rows 4000] [--epochs 5]

``--catalogue`` also writes the catalogue (item_id, embedding) as Parquet, to probe on and
to assign IDs to. Takes a few seconds on a CPU.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rqvae import RQVAE  # noqa: E402

log = logging.getLogger("byo_rqvae.train")
DIM, HIDDEN, LATENT, LEVELS, CODEBOOK = 32, [64], 16, 3, 32


def catalogue(rows: int, dim: int = DIM, seed: int = 0, centres: int = 48) -> np.ndarray:
    """Clustered float32 embeddings: ``rows`` items around ``centres`` topics."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, dim)).astype(np.float32)
    return (c[rng.integers(0, centres, rows)] + 0.3 * rng.normal(size=(rows, dim))).astype(np.float32)


def train(x: np.ndarray, epochs: int = 5, batch: int = 256, seed: int = 0) -> tuple[RQVAE, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = RQVAE(x.shape[1], HIDDEN, LATENT, LEVELS, CODEBOOK)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    data = torch.from_numpy(x)
    model.fit_codebooks(data, seed=seed)
    g = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        total = 0.0
        for idx in torch.randperm(len(data), generator=g).split(batch):
            _, loss, _ = model(data[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        model.eval()
        model.fit_codebooks(data, seed=seed + epoch + 1)  # codebooks follow the moving latents
        log.info("epoch %d: loss %.4f", epoch + 1, total / len(data))
    return model.eval(), opt


def write_catalogue(path: str | Path, x: np.ndarray, first_id: int = 0) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = pa.array(np.arange(first_id, first_id + len(x), dtype=np.int64))
    emb = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1]).cast(pa.list_(pa.float32()))
    pq.write_table(pa.table({"item_id": ids, "embedding": emb}), path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="where to save the training checkpoint (.pt)")
    p.add_argument("--catalogue", help="also write the catalogue as Parquet here")
    p.add_argument("--rows", type=int, default=4000)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    x = catalogue(args.rows, seed=args.seed)
    model, opt = train(x, args.epochs, seed=args.seed)
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": args.epochs}, args.out)
    codes = model.get_codes(torch.from_numpy(x))
    log.info("saved %s: %d levels x %d codes, %d distinct IDs among %d items", args.out, LEVELS, CODEBOOK,
             len(torch.unique(codes, dim=0)), len(x))
    if args.catalogue:
        write_catalogue(args.catalogue, x)
        log.info("catalogue: %s (%d rows)", args.catalogue, len(x))
    return 0


if __name__ == "__main__":
    sys.exit(main())
