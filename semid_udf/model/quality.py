"""How good are the semantic IDs of a checkpoint on a set of embeddings? Numbers and plots.

Everything works on plain arrays (codes ``int[n, L]``, vectors ``float32[n, d]``), so the
same functions score semid's RQ-VAE and any other quantiser (the bench compares residual
k-means and FAISS on them):

- per level: codes used / K (utilisation), dead codes, perplexity (``exp`` of the entropy
  of the code distribution; K when every code is equally used);
- unique-ID rate before the suffix (distinct code tuples / items), the largest bucket and
  the bucket-size distribution (a bucket is the set of items sharing a whole code tuple):
  the 99th percentile of the bucket size over items and the items in buckets of more than 8;
- reconstruction error, in latent space (``||z - zq||^2``) and input space
  (``||x - decoder(zq)||^2``), absolute and relative to the mean squared norm;
- semantic coherence: for each item of a sample, its exact nearest neighbour by cosine among
  the other sampled items, and how often the two share the first code and the first two
  codes, against chance (two distinct random items of the sample sharing that prefix).

No pyspark import here; matplotlib is imported only to draw.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from semid_udf.model.coder import ResidualCoder

log = logging.getLogger(__name__)


def level_stats(codes: np.ndarray, codebook_size: int) -> list[dict[str, Any]]:
    """Per level: used codes, utilisation, dead codes, perplexity, largest code's share."""
    codes = _check_codes(codes, codebook_size)
    out = []
    for level in range(codes.shape[1]):
        counts = np.bincount(codes[:, level], minlength=codebook_size)
        p = counts[counts > 0] / counts.sum()
        used = int((counts > 0).sum())
        out.append({
            "level": level,
            "used": used,
            "utilisation": used / codebook_size,
            "dead": codebook_size - used,
            "perplexity": float(np.exp(-(p * np.log(p)).sum())),
            "largest_code_share": float(counts.max() / counts.sum()),
        })
    return out


def utilisation(codes: np.ndarray, codebook_size: int) -> list[float]:
    return [s["utilisation"] for s in level_stats(codes, codebook_size)]


def bucket_sizes(codes: np.ndarray) -> np.ndarray:
    """Items per distinct code tuple (one entry per bucket, unordered)."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[0] == 0:
        raise ValueError(f"codes: expected a non-empty [n, levels] matrix, got shape {list(codes.shape)}")
    _, counts = np.unique(codes, axis=0, return_counts=True)
    return counts


def unique_rate(codes: np.ndarray) -> float:
    """Distinct code tuples / items: 1.0 when no two items share an ID before the suffix."""
    return len(bucket_sizes(codes)) / len(codes)


LARGE_BUCKET = 8  # "items in large buckets" counts the items of buckets holding more than this many


def item_bucket_quantile(sizes: np.ndarray, q: float) -> int:
    """The bucket size that a share ``q`` of *items* do not exceed: the smallest ``s`` such that
    at least ``q`` of all items are in a bucket of ``s`` items or fewer.

    Taken over items, not buckets: with 100 singletons and one bucket of 50, 99% of the
    buckets hold one item but a third of the items are in the bucket of 50, so the item
    quantile at 0.99 is 50 (the per-bucket percentile, ``p99_bucket_size``, says 1)."""
    if not 0.0 < q <= 1.0:
        raise ValueError(f"q: expected in (0, 1], got {q}")
    sizes = np.sort(np.asarray(sizes, dtype=np.int64))
    if sizes.ndim != 1 or len(sizes) == 0 or sizes.min() < 1:
        raise ValueError(f"sizes: expected a non-empty list of positive bucket sizes, got {sizes[:5].tolist()}")
    covered = np.cumsum(sizes)  # items in buckets no larger than sizes[i] (sizes sorted ascending)
    need = math.ceil(round(q * int(covered[-1]), 6))  # items to cover (rounded: 0.99 * 100 is 99, not 99.00...01)
    return int(sizes[np.searchsorted(covered, need, side="left")])


def items_in_buckets_over(sizes: np.ndarray, size: int) -> int:
    """Items whose bucket holds more than ``size`` items."""
    sizes = np.asarray(sizes, dtype=np.int64)
    return int(sizes[sizes > size].sum())


def size_bin(size: int) -> int:
    """Histogram bin of a bucket size: k for sizes in (2^(k-1), 2^k]."""
    return max(0, (size - 1).bit_length())


def bins_of_sizes(by_size: dict[int, int]) -> dict[int, int]:
    """Buckets per size bin (:func:`size_bin`) from buckets per exact size."""
    by_bin: dict[int, int] = {}
    for size, n in by_size.items():
        by_bin[size_bin(size)] = by_bin.get(size_bin(size), 0) + n
    return by_bin


def binned_bucket_stats(by_bin: dict[int, int], largest: int, rows: int) -> dict[str, Any]:
    """The bucket statistics a run publishes (its manifest's ``buckets``), from buckets per size
    bin: what a table-sized job can count in one pass (its suffixes, or one aggregate)."""
    buckets = sum(by_bin.values())
    return {
        "buckets": buckets,
        "largest_bucket": largest,
        "unique_rate_before_suffix": round(buckets / rows, 6) if rows else None,
        "bucket_size_histogram": {f"<={1 << k}": n for k, n in sorted(by_bin.items()) if n},
    }


def bucket_stats(codes: np.ndarray) -> dict[str, Any]:
    """Bucket-size statistics of a code matrix. ``p99_bucket_size`` is the 99th percentile over
    *buckets* (numpy's linear interpolation); ``p99_item_bucket_size`` is over *items* (see
    :func:`item_bucket_quantile`): 99% of items are in a bucket no larger than it.
    ``items_in_buckets_over_8`` counts the items of buckets holding more than 8 items
    (``LARGE_BUCKET``), ``share_in_buckets_over_8`` their share of all items."""
    sizes = bucket_sizes(codes)
    n = int(sizes.sum())
    values, how_many = np.unique(sizes, return_counts=True)
    large = items_in_buckets_over(sizes, LARGE_BUCKET)
    return {
        "items": n,
        "buckets": int(len(sizes)),
        "unique_rate": len(sizes) / n,
        "largest_bucket": int(sizes.max()),
        "items_sharing_an_id": int(sizes[sizes > 1].sum()),
        "mean_bucket_size": n / len(sizes),
        "p99_bucket_size": float(np.percentile(sizes, 99)),
        "p99_item_bucket_size": item_bucket_quantile(sizes, 0.99),
        f"items_in_buckets_over_{LARGE_BUCKET}": large,
        f"share_in_buckets_over_{LARGE_BUCKET}": large / n,
        # bucket size -> number of buckets of that size (JSON keys are strings)
        "bucket_size_histogram": {str(int(v)): int(c) for v, c in zip(values, how_many)},
    }


def prefix_share_chance(codes: np.ndarray, depth: int) -> float:
    """Probability that two distinct items drawn at random share their first ``depth`` codes."""
    n = len(codes)
    if n < 2:
        raise ValueError(f"chance of sharing a prefix needs at least 2 items, got {n}")
    _, c = np.unique(np.asarray(codes)[:, :depth], axis=0, return_counts=True)
    c = c.astype(np.float64)
    return float((c * (c - 1)).sum() / (n * (n - 1)))


def nearest_neighbours(x: np.ndarray, block: int = 2048) -> np.ndarray:
    """Exact nearest neighbour by cosine of each row among the other rows (ties: lowest index)."""
    v = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    v = v / v.norm(dim=1, keepdim=True).clamp(min=1e-12)
    n = v.shape[0]
    out = np.empty(n, dtype=np.int64)
    with torch.inference_mode():
        for start in range(0, n, block):
            sim = v[start:start + block] @ v.t()
            rows = torch.arange(sim.shape[0])
            sim[rows, rows + start] = -float("inf")  # not its own neighbour
            out[start:start + block] = sim.argmax(dim=1).numpy()
    return out


def collision_similarity(x: np.ndarray, codes: np.ndarray) -> dict[str, Any]:
    """Cosine between the first two items (by row) of each bucket holding more than one item.

    Shows what the collisions are: near-duplicate inputs (cosine near 1), which no quantiser
    of this size separates, or distinct items that the codes failed to tell apart."""
    codes = np.asarray(codes)
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    multi = counts > 1
    if not multi.any():
        return {"colliding_buckets": 0}
    a, b = order[starts[multi]], order[starts[multi] + 1]
    xa, xb = x[a], x[b]
    cos = (xa * xb).sum(1) / (np.linalg.norm(xa, axis=1) * np.linalg.norm(xb, axis=1)).clip(min=1e-12)
    return {"colliding_buckets": int(multi.sum()), "median_cosine": float(np.median(cos)),
            "share_cosine_ge_0.95": float((cos >= 0.95).mean()), "share_cosine_ge_0.9": float((cos >= 0.9).mean())}


def nn_similarity(x: np.ndarray, nn: np.ndarray) -> dict[str, float]:
    """How close the nearest neighbours are: near-duplicates in the data bound the unique rate."""
    v = x / np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)
    cos = (v * v[nn]).sum(1)
    return {"nn_cosine_median": float(np.median(cos)), "nn_cosine_ge_0.95": float((cos >= 0.95).mean()),
            "nn_cosine_ge_0.99": float((cos >= 0.99).mean())}


def coherence(x: np.ndarray, codes: np.ndarray, sample: int = 20_000, seed: int = 0,
              depths: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    """How often an item's exact cosine nearest neighbour (within a sample) shares its code prefix."""
    codes = np.asarray(codes)
    if len(x) != len(codes):
        raise ValueError(f"coherence: {len(x)} vectors but {len(codes)} code rows")
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(x), size=min(sample, len(x)), replace=False))
    xs, cs = x[idx], codes[idx]
    nn = nearest_neighbours(xs)
    out: dict[str, Any] = {"sample": int(len(idx)), **nn_similarity(xs, nn)}
    for d in depths:
        if d > codes.shape[1]:
            continue
        share = float((cs[:, :d] == cs[nn, :d]).all(axis=1).mean())
        chance = prefix_share_chance(cs, d)
        out[f"nn_shares_first_{d}"] = share
        out[f"chance_first_{d}"] = chance
        out[f"lift_first_{d}"] = share / chance if chance > 0 else float("inf")
    return out


def reconstruction(model: ResidualCoder, x: np.ndarray, batch: int = 4096,
                   codes: np.ndarray | None = None) -> dict[str, float]:
    """Latent and input-space squared errors of a semid model (per item, summed over dims),
    for the codes inference assigns, or for given ``codes`` (int [n, levels], e.g. after a
    collision resolver moved some items). For residual k-means the latent is the input
    (L2-normalised with ``model.normalize``: the input error is then that of the normalised
    inputs)."""
    lat_err = lat_norm = in_err = in_norm = 0.0
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(x), batch):
            xb = torch.from_numpy(np.ascontiguousarray(x[start:start + batch], dtype=np.float32))
            z = model.encoder(xb)
            if codes is None:
                _, zq = model.quantize(z)  # the codes inference publishes (beam search when model.beam > 1)
            else:
                zq = model.quantizer.decode_codes(torch.from_numpy(codes[start:start + batch].astype(np.int64)))
            x_hat = model.decoder(zq)
            target = model.input_space(xb)  # the inputs, L2-normalised where the model normalises them
            lat_err += float(((z - zq) ** 2).sum())
            lat_norm += float((z ** 2).sum())
            in_err += float(((target - x_hat) ** 2).sum())
            in_norm += float((target ** 2).sum())
    n = len(x)
    return {"latent_mse": lat_err / n, "latent_relative": lat_err / lat_norm,
            "input_mse": in_err / n, "input_relative": in_err / in_norm}


def latents(model: ResidualCoder, x: np.ndarray, batch: int = 4096) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([model.encoder(torch.from_numpy(np.ascontiguousarray(x[s:s + batch]))).numpy()
                               for s in range(0, len(x), batch)])


def code_report(codes: np.ndarray, codebook_size: int, x: np.ndarray | None = None,
                nn_sample: int = 20_000, seed: int = 0) -> dict[str, Any]:
    """Every metric that needs only the codes (and the input vectors, for coherence)."""
    rep: dict[str, Any] = {
        "items": int(len(codes)),
        "levels": int(codes.shape[1]),
        "codebook_size": int(codebook_size),
        "per_level": level_stats(codes, codebook_size),
        "buckets": bucket_stats(codes),
    }
    rep["unique_rate"] = rep["buckets"]["unique_rate"]
    rep["min_utilisation"] = min(s["utilisation"] for s in rep["per_level"])
    if x is not None:
        rep["coherence"] = coherence(x, codes, sample=nn_sample, seed=seed)
        rep["buckets"]["collisions"] = collision_similarity(x, codes)
    return rep


def checkpoint_report(model: ResidualCoder, codes: np.ndarray, x: np.ndarray, nn_sample: int = 20_000,
                      seed: int = 0) -> dict[str, Any]:
    """The full report of a semid RQ-VAE over ``x`` whose codes (as published) are ``codes``."""
    rep = code_report(codes, model.cfg.codebook_size, x, nn_sample=nn_sample, seed=seed)
    rep["reconstruction"] = reconstruction(model, x)
    return rep


# The comparison of several checkpoints on one sample (``semid-report`` with more than one
# ``--checkpoint``): one row per checkpoint, each figure taken from that checkpoint's report.
COMPARISON_COLUMNS = (
    ("checkpoint", "checkpoint"),
    ("kind", "kind"),
    ("utilisation", "utilisation per level"),
    ("unique_rate", "unique before suffix"),
    ("largest_bucket", "largest bucket"),
    ("p99_item_bucket_size", "p99 bucket (items)"),
    ("items_in_buckets_over_8", "items in buckets > 8"),
    ("input_relative", "input rel. err"),
    ("nn_shares_first_1", "NN shares 1st code"),
    ("lift_first_1", "x chance"),
    ("nn_shares_first_2", "NN shares 1st two"),
    ("lift_first_2", "x chance (two)"),
    ("fit_seconds", "fit s"),
)


def comparison_row(name: str, kind: str, rep: dict[str, Any], fit_seconds: float | None) -> dict[str, Any]:
    """One checkpoint's row of the comparison, from its report (:func:`code_report` plus
    ``reconstruction`` where semid can decode the codes)."""
    c, b = rep["coherence"], rep["buckets"]
    return {
        "checkpoint": name,
        "kind": kind,
        "utilisation": [s["utilisation"] for s in rep["per_level"]],
        "unique_rate": rep["unique_rate"],
        "largest_bucket": b["largest_bucket"],
        "p99_item_bucket_size": b["p99_item_bucket_size"],
        f"items_in_buckets_over_{LARGE_BUCKET}": b[f"items_in_buckets_over_{LARGE_BUCKET}"],
        "input_relative": rep["reconstruction"]["input_relative"] if "reconstruction" in rep else None,
        **{k: c.get(k) for k in ("nn_shares_first_1", "lift_first_1", "nn_shares_first_2", "lift_first_2")},
        "fit_seconds": fit_seconds,
    }


def comparison_markdown(rows: list[dict[str, Any]]) -> str:
    """The comparison as a Markdown table (``n/a`` where a figure does not apply)."""

    def cell(key: str, v: Any) -> str:
        if v is None:
            return "n/a"
        if key == "utilisation":
            return " / ".join(f"{u:.3f}" for u in v)
        if key.startswith("lift_"):
            return f"{v:.0f}x"
        if key in ("unique_rate", "input_relative") or key.startswith("nn_shares"):
            return f"{v:.4f}"
        if key == "fit_seconds":
            return f"{v:.0f}"
        return f"{v:,}" if isinstance(v, int) else str(v)

    head = "| " + " | ".join(title for _, title in COMPARISON_COLUMNS) + " |"
    rule = "|" + " --- |" * len(COMPARISON_COLUMNS)
    body = ["| " + " | ".join(cell(k, r.get(k)) for k, _ in COMPARISON_COLUMNS) + " |" for r in rows]
    return "\n".join([head, rule, *body]) + "\n"


def plot_comparison(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """One figure, one panel per measure, one bar per checkpoint: what ``comparison.md`` says."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("lift_first_1", "NN shares 1st code (x chance)"), ("lift_first_2", "NN shares 1st two (x chance)"),
              ("unique_rate", "unique before suffix"), ("input_relative", "input relative error"),
              (f"items_in_buckets_over_{LARGE_BUCKET}", f"items in buckets > {LARGE_BUCKET}"),
              ("largest_bucket", "largest bucket"))
    names = [r["checkpoint"] for r in rows]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, (key, label) in zip(axes.ravel(), panels):
        values = [r.get(key) for r in rows]
        ax.bar(range(len(rows)), [v if v is not None else 0 for v in values], color=[f"C{i}" for i in range(len(rows))])
        for i, v in enumerate(values):
            ax.annotate("n/a" if v is None else f"{v:.3g}", (i, v or 0), ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(rows)), names, rotation=20, ha="right", fontsize=8)
        ax.set_title(label, fontsize=10)
    fig.suptitle(title or "semantic IDs of each checkpoint on the same sample")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def targets(rep: dict[str, Any], min_util: float = 0.95, min_unique: float = 0.99, min_lift: float = 5.0) -> dict[str, bool]:
    """The issue's acceptance targets that a report alone can decide."""
    out = {"every_level_utilisation": rep["min_utilisation"] >= min_util, "unique_rate": rep["unique_rate"] >= min_unique}
    if "coherence" in rep:
        out["first_code_lift"] = rep["coherence"]["lift_first_1"] >= min_lift
    return out


def write_json(rep: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rep, indent=2, sort_keys=True) + "\n")
    return path


def plot(codes: np.ndarray, codebook_size: int, out_dir: str | Path, title: str = "") -> list[Path]:
    """``code_usage.png`` (items per code, sorted, one line per level) and ``bucket_sizes.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    codes = _check_codes(codes, codebook_size)
    paths = []

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for level in range(codes.shape[1]):
        counts = np.sort(np.bincount(codes[:, level], minlength=codebook_size))[::-1]
        used = int((counts > 0).sum())
        ax.plot(np.arange(codebook_size), counts, label=f"level {level}: {used}/{codebook_size} used")
    ax.axhline(len(codes) / codebook_size, color="grey", ls=":", label="uniform")
    ax.set_yscale("symlog", linthresh=1)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("code rank (most used first)")
    ax.set_ylabel("items")
    ax.set_title(f"{title} code usage per level".strip())
    ax.legend()
    fig.tight_layout()
    paths.append(out_dir / "code_usage.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    sizes = bucket_sizes(codes)
    edges = [1, 2, 3]  # bins 1, 2, 3-4, 5-8, 9-16, ...: bucket sizes spread over orders of magnitude
    while edges[-1] <= sizes.max():
        edges.append(2 * edges[-1] - 1)
    items = [int(sizes[(sizes >= lo) & (sizes < hi)].sum()) for lo, hi in zip(edges[:-1], edges[1:])]
    labels = [str(lo) if hi - lo == 1 else f"{lo}-{hi - 1}" for lo, hi in zip(edges[:-1], edges[1:])]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.bar(np.arange(len(items)), items, tick_label=labels)
    ax.tick_params(axis="x", labelrotation=30)
    ax.set_yscale("log")
    ax.set_xlabel("bucket size (items sharing a whole code tuple)")
    ax.set_ylabel("items in buckets of that size")
    ax.set_title(f"{title} bucket sizes: unique-ID rate {len(sizes) / len(codes):.4f}, "
                 f"largest bucket {int(sizes.max())}".strip())
    fig.tight_layout()
    paths.append(out_dir / "bucket_sizes.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def _check_codes(codes: np.ndarray, codebook_size: int) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[0] == 0:
        raise ValueError(f"codes: expected a non-empty [n, levels] matrix, got shape {list(codes.shape)}")
    if not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"codes: expected integers, got {codes.dtype}")
    if codes.min() < 0 or codes.max() >= codebook_size:
        raise ValueError(f"codes: expected values in [0, {codebook_size}), got [{codes.min()}, {codes.max()}]")
    return codes.astype(np.int64, copy=False)
