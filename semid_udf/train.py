"""Fitting the RQ-VAE on a sample held on the driver (numpy in, model out).

Codebooks start from k-means++ on the sample's latents, level by level on the residuals,
and follow the encoder by an exponential moving average of the residuals assigned to them
(van den Oord et al. 2017, appendix; Razavi et al. 2019). A code unused for
``dead_code_steps`` steps is re-seeded from a residual of the current batch, so codebooks
do not collapse onto a few codes. Loss: reconstruction summed over dimensions (averaging it
shrinks the gradient D times and is a known cause of collapse) + beta * commitment.
Deterministic for a seed and a thread count. No pyspark import here.
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from .config import ModelConfig, TrainConfig
from .model import RQVAE

log = logging.getLogger(__name__)


def kmeans(x: torch.Tensor, k: int, iters: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means++ seeding then Lloyd iterations; returns (centroids [k, d], counts [k])."""
    n = x.shape[0]
    if n < k:
        raise ValueError(f"k-means: expected at least {k} sample rows (one per code), got {n}")
    centroids = torch.empty(k, x.shape[1], dtype=x.dtype)
    first = int(torch.randint(n, (1,), generator=gen))
    centroids[0] = x[first]
    d2 = ((x - centroids[0]) ** 2).sum(1)
    for j in range(1, k):
        total = float(d2.sum())
        pick = int(torch.multinomial(d2 / total, 1, generator=gen)) if total > 0 else j % n
        centroids[j] = x[pick]
        d2 = torch.minimum(d2, ((x - centroids[j]) ** 2).sum(1))
    from .model import ResidualQuantizer

    for _ in range(iters):
        idx = ResidualQuantizer.nearest(x, centroids)
        counts = torch.bincount(idx, minlength=k).to(x.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, idx, x)
        empty = counts == 0
        centroids = torch.where(empty[:, None], centroids, sums / counts.clamp(min=1)[:, None])
        if empty.any():  # re-seed empty clusters with the points farthest from their centroid
            far = ((x - centroids[idx]) ** 2).sum(1).topk(int(empty.sum())).indices
            centroids[empty] = x[far]
    idx = ResidualQuantizer.nearest(x, centroids)
    return centroids, torch.bincount(idx, minlength=k).to(x.dtype)


class EmaCodebooks:
    """EMA statistics of each codebook plus the step each code was last used."""

    def __init__(self, model: RQVAE, counts: list[torch.Tensor], batch_fraction: float, cfg: TrainConfig):
        cb = model.quantizer.codebooks
        self.model, self.cfg = model, cfg
        self.n = torch.stack([c * batch_fraction for c in counts]).clamp(min=1e-3)  # [L, K]
        self.s = cb.detach().clone() * self.n[..., None]
        self.last_used = torch.zeros(cb.shape[:2], dtype=torch.long)
        self.resets = 0

    @torch.no_grad()
    def update(self, step: int, residuals: list[torch.Tensor], codes: torch.Tensor, gen: torch.Generator) -> None:
        cb, decay = self.model.quantizer.codebooks, self.cfg.ema_decay
        L, K, _ = cb.shape
        for level in range(L):
            r, idx = residuals[level].detach(), codes[:, level]
            counts = torch.bincount(idx, minlength=K).to(r.dtype)
            sums = torch.zeros(K, r.shape[1], dtype=r.dtype).index_add_(0, idx, r)
            self.n[level].mul_(decay).add_(counts, alpha=1 - decay)
            self.s[level].mul_(decay).add_(sums, alpha=1 - decay)
            total = self.n[level].sum()
            smoothed = (self.n[level] + 1e-5) / (total + K * 1e-5) * total
            cb[level] = self.s[level] / smoothed[:, None]
            self.last_used[level][counts > 0] = step
            dead = (step - self.last_used[level]) >= self.cfg.dead_code_steps
            if dead.any():
                k = int(dead.sum())
                pick = torch.randint(r.shape[0], (k,), generator=gen)
                cb[level][dead] = r[pick]
                self.n[level][dead] = 1.0
                self.s[level][dead] = r[pick]
                self.last_used[level][dead] = step
                self.resets += k


def utilisation(codes: np.ndarray, codebook_size: int) -> list[float]:
    return [len(np.unique(codes[:, level])) / codebook_size for level in range(codes.shape[1])]


def fit(x: np.ndarray, model_cfg: ModelConfig, cfg: TrainConfig) -> tuple[RQVAE, dict[str, Any]]:
    """Fit an RQ-VAE on ``x`` (float32 [n, D]); return the model and training metadata."""
    if x.ndim != 2 or x.dtype != np.float32:
        raise ValueError(f"training data: expected float32 [n, D], got {x.dtype} {list(x.shape)}")
    if model_cfg.input_dim not in (0, x.shape[1]):
        raise ValueError(f"model.input_dim is {model_cfg.input_dim} but the data has dimension {x.shape[1]}")
    model_cfg = replace(model_cfg, input_dim=x.shape[1])
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    t0 = time.perf_counter()
    model = RQVAE(model_cfg)
    data = torch.from_numpy(np.ascontiguousarray(x))
    n = data.shape[0]
    bs = min(cfg.batch_size, n)

    with torch.no_grad():  # k-means++ init of each level on the sample's latents
        residual = model.encoder(data)
        counts = []
        for level in range(model_cfg.levels):
            c, cnt = kmeans(residual, model_cfg.codebook_size, cfg.kmeans_iters, gen)
            model.quantizer.codebooks[level] = c
            counts.append(cnt)
            residual = residual - c[model.quantizer.nearest(residual, c)]
    log.info("k-means init of %d levels on %d rows in %.1fs", model_cfg.levels, n, time.perf_counter() - t0)

    ema = EmaCodebooks(model, counts, bs / n, cfg)
    opt = torch.optim.Adam([p for p in model.parameters()], lr=cfg.lr)
    step, history = 0, []
    for epoch in range(cfg.epochs):
        te = time.perf_counter()
        perm = torch.randperm(n, generator=gen)
        sums = np.zeros(3)
        batches = 0
        for start in range(0, n - bs + 1, bs):  # full batches only: every step sees the same shape
            xb = data[perm[start:start + bs]]
            out = model(xb)
            recon = ((out["x_hat"] - xb) ** 2).sum(1).mean()
            commit = ((out["z"] - out["zq"].detach()) ** 2).sum(1).mean()
            loss = recon + cfg.beta * commit
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            ema.update(step, out["residuals"], out["codes"], gen)
            sums += (loss.item(), recon.item(), commit.item())
            batches += 1
        loss, recon, commit = sums / max(batches, 1)
        history.append({"epoch": epoch + 1, "loss": loss, "recon": recon, "commit": commit})
        log.info("epoch %d/%d  loss %.4f  recon %.4f  commit %.4f  (%.1fs, %d code resets so far)",
                 epoch + 1, cfg.epochs, loss, recon, commit, time.perf_counter() - te, ema.resets)

    model.eval()
    codes = model.encode(data).numpy()
    util = utilisation(codes, model_cfg.codebook_size)
    unique = len(np.unique(codes, axis=0)) / n
    meta = {
        "sample_rows": int(n),
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "batch_size": bs,
        "lr": cfg.lr,
        "beta": cfg.beta,
        "ema_decay": cfg.ema_decay,
        "dead_code_steps": cfg.dead_code_steps,
        "code_resets": ema.resets,
        "fit_seconds": round(time.perf_counter() - t0, 2),
        "utilisation_per_level": [round(u, 4) for u in util],
        "unique_rate_on_sample": round(unique, 4),
        "history": history,
    }
    log.info("trained: utilisation per level %s, unique-ID rate on the sample %.4f", meta["utilisation_per_level"], unique)
    return model, meta
