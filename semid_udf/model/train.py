"""Fitting semid's model on a sample held on the driver (numpy in, model out).

``model.kind=rqkmeans`` is residual k-means on the inputs (:func:`fit_rqkmeans`: k-means++ and
Lloyd rounds per level, optionally balanced so that no code takes more than its share of the
sample), then the codebook refinement below. ``model.kind=rqvae``, the RQ-VAE:

Codebooks start from k-means++ on the sample's latents, level by level on the residuals,
and follow the encoder by an exponential moving average of the residuals assigned to them
(van den Oord et al. 2017, appendix; Razavi et al. 2019). A code unused for
``dead_code_steps`` steps is re-seeded from a residual of the current batch, so codebooks
do not collapse onto a few codes. Loss: reconstruction summed over dimensions (averaging it
shrinks the gradient D times and is a known cause of collapse) + beta * commitment.

Measured on 220k real sentence embeddings (``bench/quality.py``, ``bench/QUALITY.md``):
the gradient through the quantiser is the rotation trick (Fifty et al. 2024) by default:
straight-through diverged there (commitment loss jumped after 13 epochs, level 0 fell to 10%
utilisation). After training, the codebooks are refined on the final latents of the whole
sample (``REFINE_ITERS`` rounds of residual k-means: greedy encode as inference does, then
each code becomes the mean of what the other levels leave of its items; empty codes are
re-seeded from the worst-reconstructed items; a round is kept only if it lowers the error).
Measured: latent error -4%, first-code lift 82x -> 87x, and no code left dead on the sample
(without it a small test set kept 13 of 16 codes); it costs some unique IDs (0.977 -> 0.9725
on the bench) and the largest bucket grew 47 -> 90: kept, with the trade-off documented.
Optional (``train.balance_last_level`` > 0, off by default): during the training epochs the
last level's codes of each batch come from a balanced assignment instead of the nearest code,
as LC-Rec (Zheng et al. 2024, "Adapting Large Language Models by Integrating Collaborative
Semantics for Recommendation") does: entropic optimal transport of the batch's residuals
onto the last codebook with uniform marginals, solved by Sinkhorn-Knopp, each row taking
the code of its largest transport weight. The EMA codebook update, the commitment loss and
the decoder then see those codes, so the last codebook is pulled towards an even spread of
the training residuals. Inference is untouched (nearest code / beam search per item, from
the item alone), and so is the refinement after training.
Deterministic for a seed and a thread count. No pyspark import here.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from semid_udf.config import ModelConfig, TrainConfig
from semid_udf.errors import ConfigError
from semid_udf.model.coder import RQVAE, RQKMeans, ResidualCoder, ResidualQuantizer

log = logging.getLogger(__name__)

GRADS = ("ste", "rotation")
REFINE_ITERS = 10  # rounds of codebook refinement on the final latents (0 = off)
# Entropy weight of the balanced last-level assignment, on distances scaled to [-1, 1] per
# batch (LC-Rec's value for its last level; smaller is closer to a hard balanced matching).
BALANCE_EPSILON = 0.003


BALANCED_ITERS = 5  # balanced k-means: Lloyd rounds under the cap, after the unconstrained ones (each costs a capped_assign)


def capped_assign(x: torch.Tensor, centroids: torch.Tensor, cap: int) -> torch.Tensor:
    """Assign each row of ``x`` to a centroid so that no centroid takes more than ``cap`` rows,
    keeping rows as near their centroid as the caps allow.

    Deferred acceptance (Gale & Shapley 1962, with capacities): every unassigned row proposes
    to its nearest centroid it has not yet proposed to; each centroid keeps the ``cap`` nearest
    rows among those it holds and the new proposals, and turns the rest away. The result is
    stable (no row and centroid both prefer each other to what they got) and deterministic
    (ties: the lower row index, then the lower centroid index). Needs ``cap * k >= n``."""
    n, k = x.shape[0], centroids.shape[0]
    if cap * k < n:
        raise ValueError(f"capped_assign: {k} centroids of at most {cap} rows cannot take {n} rows")
    d = torch.addmm((centroids * centroids).sum(1), x, centroids.t(), beta=1.0, alpha=-2.0)
    d += (x * x).sum(1, keepdim=True)  # the full squared distance: centroids compare different rows
    pref = torch.sort(d, dim=1, stable=True).indices.to(torch.int32 if k > 32767 else torch.int16)
    dev = x.device
    tried = torch.zeros(n, dtype=torch.long, device=dev)
    owner = torch.full((n,), -1, dtype=torch.long, device=dev)
    free = torch.arange(n, device=dev)
    while free.numel():
        choice = pref[free, tried[free]].long()
        tried[free] += 1
        touched = torch.zeros(k, dtype=torch.bool, device=dev)
        touched[choice] = True
        held = torch.nonzero((owner >= 0) & touched[owner.clamp(min=0)]).squeeze(1)
        rows = torch.cat([held, free])
        cl = torch.cat([owner[held], choice])
        order = torch.sort(rows, stable=True).indices  # ties: the lower row first
        order = order[torch.sort(d[rows[order], cl[order]], stable=True).indices]
        order = order[torch.sort(cl[order], stable=True).indices]
        rows, cl = rows[order], cl[order]
        start = torch.searchsorted(cl, cl, side="left")
        keep = (torch.arange(len(rows), device=dev) - start) < cap
        owner[rows[keep]] = cl[keep]
        owner[rows[~keep]] = -1
        free = rows[~keep]
    return owner


def kmeans(x: torch.Tensor, k: int, iters: int, gen: torch.Generator, cap: int = 0
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means++ seeding then Lloyd iterations; returns (centroids [k, d], counts [k]).

    With ``cap`` > 0, balanced k-means: after the same unconstrained iterations,
    ``BALANCED_ITERS`` more in which each row goes to its centroid under :func:`capped_assign`
    (no cluster above ``cap`` rows); the counts returned are those of the capped assignment."""
    n = x.shape[0]
    if n < k:
        raise ValueError(f"k-means: expected at least {k} sample rows (one per code), got {n}")
    centroids = torch.empty(k, x.shape[1], dtype=x.dtype, device=x.device)
    first = int(torch.randint(n, (1,), generator=gen))
    centroids[0] = x[first]
    d2 = ((x - centroids[0]) ** 2).sum(1)
    for j in range(1, k):
        total = float(d2.sum())
        pick = int(torch.multinomial((d2 / total).cpu(), 1, generator=gen)) if total > 0 else j % n  # gen: CPU
        centroids[j] = x[pick]
        d2 = torch.minimum(d2, ((x - centroids[j]) ** 2).sum(1))

    def nearest(c: torch.Tensor) -> torch.Tensor:
        return ResidualQuantizer.nearest(x, c)

    def capped(c: torch.Tensor) -> torch.Tensor:
        return capped_assign(x, c, cap)

    for assign in [nearest] * iters + ([capped] * BALANCED_ITERS if cap > 0 else []):
        idx = assign(centroids)
        counts = torch.bincount(idx, minlength=k).to(x.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, idx, x)
        empty = counts == 0
        centroids = torch.where(empty[:, None], centroids, sums / counts.clamp(min=1)[:, None])
        if empty.any():  # re-seed empty clusters with the points farthest from their centroid
            far = ((x - centroids[idx]) ** 2).sum(1).topk(int(empty.sum())).indices
            centroids[empty] = x[far]
    idx = capped(centroids) if cap > 0 else nearest(centroids)
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


def rotate_to(z: torch.Tensor, zq: torch.Tensor) -> torch.Tensor:
    """The rotation trick (Fifty et al. 2024): ``zq`` in value, gradient to ``z`` through a fixed
    rotation and rescaling that maps ``z`` onto ``zq`` (straight-through copies it unchanged)."""
    with torch.no_grad():
        zn = z.norm(dim=1, keepdim=True).clamp(min=1e-12)
        qn = zq.norm(dim=1, keepdim=True).clamp(min=1e-12)
        e, q = z / zn, zq / qn
        r = e + q
        r = r / r.norm(dim=1, keepdim=True).clamp(min=1e-12)
        scale = qn / zn
    return scale * (z - 2 * (z * r).sum(1, keepdim=True) * r + 2 * (z * e).sum(1, keepdim=True) * q)


def sinkhorn_assign(dist: torch.Tensor, iters: int, epsilon: float = BALANCE_EPSILON) -> torch.Tensor:
    """Balanced assignment of ``B`` rows to ``K`` codes from distances ``dist [B, K]``.

    Entropic optimal transport with uniform marginals (each row carries ``1/B``, each code
    receives ``1/K``), solved by ``iters`` rounds of Sinkhorn-Knopp (alternately rescale the
    plan's columns, then its rows) in float64, on the distances scaled to [-1, 1] over the
    batch so that ``epsilon`` does not depend on their unit. Each row takes the code of its
    largest transport weight (ties: the lowest code). The plan is ``exp(-d / epsilon)`` times
    a price per row and per code, so this is the nearest code after a per-code price that
    grows with the code's load: a code nearest to more than ``B/K`` rows hands its farthest
    rows to their next codes. Deterministic; no randomness."""
    if dist.ndim != 2 or dist.shape[0] == 0 or dist.shape[1] == 0:
        raise ValueError(f"sinkhorn_assign: expected a non-empty [rows, codes] matrix, got {list(dist.shape)}")
    if iters <= 0 or not epsilon > 0:
        raise ValueError(f"sinkhorn_assign: expected iters > 0 and epsilon > 0, got {iters} and {epsilon}")
    d = dist.detach().to(torch.float64)
    if not torch.isfinite(d).all():
        raise ValueError("sinkhorn_assign: the distances hold NaN/Inf (the latents diverged)")
    b, k = d.shape
    hi, lo = d.max(), d.min()
    mid = (hi + lo) / 2
    d = (d - mid) / (hi - mid + 1e-5)  # in [-1, 1]; the constant keeps a batch of equal distances finite
    logits = -d / epsilon
    plan = torch.exp(logits - logits.max(dim=1, keepdim=True).values)  # a row's scale is free: its best is 1
    plan /= plan.sum()
    for _ in range(iters):
        plan /= plan.sum(dim=0, keepdim=True) * k  # every code receives 1/K
        plan /= plan.sum(dim=1, keepdim=True) * b  # every row sends 1/B
    if not torch.isfinite(plan).all():
        raise ValueError(f"sinkhorn_assign: the transport plan under/overflowed (epsilon {epsilon} too small for "
                         "float64 on distances scaled to [-1, 1]); use a larger epsilon")
    return plan.argmax(dim=1)


def quantize_for_training(quantizer: ResidualQuantizer, z: torch.Tensor, balance_iters: int,
                          epsilon: float = BALANCE_EPSILON
                          ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """What the training epochs quantise with: the quantiser's own greedy forward, or, with
    ``balance_iters`` > 0, the same greedy levels and a balanced (:func:`sinkhorn_assign`)
    last level over the batch. Returns (codes, quantised ``z``, residual entering each level)."""
    if balance_iters <= 0:
        return quantizer(z)

    def balanced(residual: torch.Tensor, cb: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # squared L2, computed as the quantiser's nearest() does, plus ||r||^2
            r = residual.detach()
            dist = torch.addmm((cb * cb).sum(1), r, cb.t(), beta=1.0, alpha=-2.0) + (r * r).sum(1, keepdim=True)
        return sinkhorn_assign(dist, balance_iters, epsilon)

    return quantizer(z, assign_last=balanced)


def init_codebooks(model: RQVAE, data: torch.Tensor, iters: int, gen: torch.Generator) -> list[torch.Tensor]:
    """k-means++ of each level on the residuals of the sample's latents; returns counts per level."""
    counts = []
    with torch.no_grad():
        residual = model.encoder(data)
        for level in range(model.cfg.levels):
            c, cnt = kmeans(residual, model.cfg.codebook_size, iters, gen)
            model.quantizer.codebooks[level] = c
            counts.append(cnt)
            residual = residual - c[model.quantizer.nearest(residual, c)]
    return counts


def train_epochs(model: RQVAE, data: torch.Tensor, cfg: TrainConfig, ema: EmaCodebooks, gen: torch.Generator,
                 grad: str = "ste", balance_epsilon: float = BALANCE_EPSILON) -> list[dict[str, float]]:
    """Adam on the encoder and decoder, EMA on the codebooks; returns per-epoch mean losses.
    With ``cfg.balance_last_level`` > 0 the last level's codes of each batch are balanced
    (:func:`quantize_for_training`); ``moved`` is then the share of a batch's items whose
    balanced last code is not their nearest one (epoch mean)."""
    if grad not in GRADS:
        raise ValueError(f"grad: expected one of {GRADS}, got {grad!r}")
    n = data.shape[0]
    bs = min(cfg.batch_size, n)
    opt = torch.optim.Adam([p for p in model.parameters()], lr=cfg.lr)
    step, history, t0 = 0, [], time.perf_counter()
    for epoch in range(cfg.epochs):
        te = time.perf_counter()
        perm = torch.randperm(n, generator=gen)
        sums = np.zeros(3)
        moved = 0.0
        batches = 0
        for start in range(0, n - bs + 1, bs):  # full batches only: every step sees the same shape
            xb = data[perm[start:start + bs]]
            z = model.encoder(xb)
            codes, zq, residuals = quantize_for_training(model.quantizer, z, cfg.balance_last_level, balance_epsilon)
            if cfg.balance_last_level > 0:
                nearest = model.quantizer.nearest(residuals[-1].detach(), model.quantizer.codebooks[-1])
                moved += float((codes[:, -1] != nearest).float().mean())
            z_q = rotate_to(z, zq) if grad == "rotation" else z + (zq - z).detach()
            x_hat = model.decoder(z_q)
            recon = ((x_hat - xb) ** 2).sum(1).mean()
            commit = ((z - zq.detach()) ** 2).sum(1).mean()
            loss = recon + cfg.beta * commit
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            ema.update(step, residuals, codes, gen)
            sums += (loss.item(), recon.item(), commit.item())
            batches += 1
        loss, recon, commit = sums / max(batches, 1)
        history.append({"epoch": epoch + 1, "loss": loss, "recon": recon, "commit": commit})
        if cfg.balance_last_level > 0:
            history[-1]["moved"] = moved / max(batches, 1)
        elapsed = time.perf_counter() - t0
        log.info("epoch %d/%d  loss %.4f  recon %.4f  commit %.4f%s  (%.1fs, eta %.0fs, %d code resets so far)",
                 epoch + 1, cfg.epochs, loss, recon, commit,
                 f"  balanced last level moved {history[-1]['moved']:.3f}" if "moved" in history[-1] else "",
                 time.perf_counter() - te, elapsed / (epoch + 1) * (cfg.epochs - epoch - 1), ema.resets)
    return history


@torch.no_grad()
def refine_codebooks(model: ResidualCoder, z: torch.Tensor, iters: int, frozen: tuple[int, ...] = ()
                     ) -> dict[str, Any]:
    """Residual k-means on fixed latents ``z``: encode as inference does (``model.beam``), then set each
    code to the mean of what the other levels leave of its items; empty codes take the items
    reconstructed worst. Keeps a round only if it lowers the latent error. Levels in ``frozen``
    (balanced ones) keep their codebooks."""
    q = model.quantizer
    cb = q.codebooks
    L, K, _ = cb.shape

    def error(codes: torch.Tensor) -> float:
        return float(((z - q.decode_codes(codes)) ** 2).sum(1).mean())

    beam = model.cfg.beam
    codes = q.beam_codes(z, beam)
    start = best = error(codes)
    reseeded = rounds = 0
    for _ in range(iters):
        old = cb.clone()
        recon = q.decode_codes(codes)
        for level in range(L):
            if level in frozen:
                continue
            own = cb[level][codes[:, level]]
            target = z - recon + own  # what the other levels leave for this one
            counts = torch.bincount(codes[:, level], minlength=K)
            sums = torch.zeros_like(cb[level]).index_add_(0, codes[:, level], target)
            used = counts > 0
            cb[level][used] = sums[used] / counts[used, None].to(z.dtype)
            if (~used).any():
                worst = ((target - cb[level][codes[:, level]]) ** 2).sum(1).topk(int((~used).sum())).indices
                cb[level][~used] = target[worst]
                reseeded += int((~used).sum())
            recon = recon - own + cb[level][codes[:, level]]
        new_codes = q.beam_codes(z, beam)
        err = error(new_codes)
        if err >= best:
            cb.copy_(old)
            break
        best, codes, rounds = err, new_codes, rounds + 1
    log.info("codebook refinement: latent error %.5f -> %.5f in %d rounds (%d empty codes re-seeded)",
             start, best, rounds, reseeded)
    return {"latent_error_before": start, "latent_error_after": best, "rounds": rounds, "reseeded": reseeded}


def utilisation(codes: np.ndarray, codebook_size: int) -> list[float]:
    return [len(np.unique(codes[:, level])) / codebook_size for level in range(codes.shape[1])]


def balanced_levels(model_cfg: ModelConfig, cfg: TrainConfig) -> tuple[int, ...]:
    """The levels ``train.kmeans_balance`` fits as balanced k-means (rqkmeans only)."""
    if model_cfg.kind != "rqkmeans" or cfg.kmeans_balance == "none":
        return ()
    return tuple(range(model_cfg.levels)) if cfg.kmeans_balance == "all" else (model_cfg.levels - 1,)


def level_cap(rows: int, cfg: TrainConfig, codebook_size: int) -> int:
    """Rows a balanced cluster may hold: ``ceil(train.kmeans_cap * rows / codebook_size)``."""
    return math.ceil(round(cfg.kmeans_cap * rows / codebook_size, 6))


def fit_device(preference: str) -> torch.device:
    """Where the driver fits residual k-means: ``train.device`` (auto: its GPU when it has one)."""
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("train.device: expected a CUDA device on the driver, got none "
                          "(torch.cuda.is_available() is False); use train.device=auto or cpu")
    return torch.device("cuda:0")


@torch.no_grad()
def fit_rqkmeans(data: torch.Tensor, model_cfg: ModelConfig, cfg: TrainConfig, gen: torch.Generator
                 ) -> tuple[RQKMeans, dict[str, Any]]:
    """Residual k-means, level by level: k-means++ and ``train.kmeans_iters`` Lloyd rounds on
    what the previous levels leave of each sample row (balanced k-means at the levels
    ``train.kmeans_balance`` names, each cluster capped at :func:`level_cap` rows). The next
    level sees the residual of the code inference would pick (the nearest), so what it fits is
    what it will be given. Returns the model (on the CPU) and the balanced levels' figures."""
    device = fit_device(cfg.device)
    model = RQKMeans(model_cfg)
    z = model.encoder(data).to(device)
    balanced = balanced_levels(model_cfg, cfg)
    cap = level_cap(len(z), cfg, model_cfg.codebook_size)
    residual, info = z, {}
    for level in range(model_cfg.levels):
        t = time.perf_counter()
        c, counts = kmeans(residual, model_cfg.codebook_size, cfg.kmeans_iters, gen,
                           cap=cap if level in balanced else 0)
        model.quantizer.codebooks[level] = c.cpu()
        nearest = ResidualQuantizer.nearest(residual, c)
        if level in balanced:
            info[f"level_{level}"] = {"cap": cap, "largest_on_sample": int(counts.max()),
                                      "largest_nearest": int(torch.bincount(nearest).max())}
        log.info("level %d/%d: %sk-means on %d rows in %.1fs", level + 1, model_cfg.levels,
                 f"balanced (cap {cap}) " if level in balanced else "", len(z), time.perf_counter() - t)
        residual = residual - c[nearest]
    return model, {"device": str(device), "balanced_levels": list(balanced), **({"balanced": info} if info else {})}


def fit(x: np.ndarray, model_cfg: ModelConfig, cfg: TrainConfig, *, grad: str = "rotation",
        refine_iters: int = REFINE_ITERS, balance_epsilon: float = BALANCE_EPSILON
        ) -> tuple[ResidualCoder, dict[str, Any]]:
    """Fit a model of ``model.kind`` on ``x`` (float32 [n, D]); return the model and training
    metadata. ``rqvae``: k-means++ codebooks on the encoder's latents, then epochs of Adam and
    EMA; ``rqkmeans``: residual k-means on the inputs (:func:`fit_rqkmeans`). Both end with
    the same codebook refinement for the codes inference picks. ``balance_epsilon`` is the
    entropy weight of the RQ-VAE's balanced last level (``train.balance_last_level`` > 0)."""
    if x.ndim != 2 or x.dtype != np.float32:
        raise ValueError(f"training data: expected float32 [n, D], got {x.dtype} {list(x.shape)}")
    if model_cfg.input_dim not in (0, x.shape[1]):
        raise ValueError(f"model.input_dim is {model_cfg.input_dim} but the data has dimension {x.shape[1]}")
    model_cfg = replace(model_cfg, input_dim=x.shape[1])
    if model_cfg.kind == "rqkmeans":  # no network: the latent is the input
        model_cfg = replace(model_cfg, hidden_dims=(), latent_dim=x.shape[1])
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    t0 = time.perf_counter()
    data = torch.from_numpy(np.ascontiguousarray(x))
    n = data.shape[0]
    meta: dict[str, Any] = {"kind": model_cfg.kind, "sample_rows": int(n), "seed": cfg.seed,
                            "kmeans_iters": cfg.kmeans_iters}
    model: ResidualCoder
    if model_cfg.kind == "rqkmeans":
        model, info = fit_rqkmeans(data, model_cfg, cfg, gen)
        meta.update(normalize=model_cfg.normalize, kmeans_balance=cfg.kmeans_balance, **info)
        if cfg.kmeans_balance != "none":
            meta["kmeans_cap"] = cfg.kmeans_cap
    else:
        model, rqvae_meta = fit_rqvae(data, model_cfg, cfg, gen, grad, balance_epsilon)
        meta.update(rqvae_meta)

    model.eval()
    with torch.no_grad():
        z = torch.cat([model.encoder(data[s:s + 8192]) for s in range(0, n, 8192)])
    frozen = balanced_levels(model_cfg, cfg)
    meta["refinement"] = refine_codebooks(model, z, refine_iters, frozen) if refine_iters > 0 else {}
    with torch.no_grad():
        codes = torch.cat([model.quantize(z[s:s + 8192])[0] for s in range(0, n, 8192)]).numpy()
    util = utilisation(codes, model_cfg.codebook_size)
    unique = len(np.unique(codes, axis=0)) / n
    meta.update({
        "fit_seconds": round(time.perf_counter() - t0, 2),
        "utilisation_per_level": [round(u, 4) for u in util],
        "unique_rate_on_sample": round(unique, 4),
    })
    log.info("fitted %s: utilisation per level %s, unique-ID rate on the sample %.4f", model_cfg.kind,
             meta["utilisation_per_level"], unique)
    return model, meta


def fit_rqvae(data: torch.Tensor, model_cfg: ModelConfig, cfg: TrainConfig, gen: torch.Generator, grad: str,
              balance_epsilon: float) -> tuple[RQVAE, dict[str, Any]]:
    """The RQ-VAE's epochs: k-means++ codebooks on the initial latents, then Adam on the encoder
    and decoder with EMA codebooks. Returns the model and its training figures."""
    t0 = time.perf_counter()
    model = RQVAE(model_cfg)
    n = data.shape[0]
    bs = min(cfg.batch_size, n)
    counts = init_codebooks(model, data, cfg.kmeans_iters, gen)
    log.info("k-means init of %d levels on %d rows in %.1fs", model_cfg.levels, n, time.perf_counter() - t0)
    ema = EmaCodebooks(model, counts, bs / n, cfg)
    history = train_epochs(model, data, cfg, ema, gen, grad=grad, balance_epsilon=balance_epsilon)
    return model, {
        "epochs": cfg.epochs,
        "batch_size": bs,
        "lr": cfg.lr,
        "beta": cfg.beta,
        "ema_decay": cfg.ema_decay,
        "dead_code_steps": cfg.dead_code_steps,
        "grad": grad,
        "balance_last_level": cfg.balance_last_level,
        **({"balance_epsilon": balance_epsilon} if cfg.balance_last_level > 0 else {}),
        "code_resets": ema.resets,
        "history": history,
    }
