"""Quality bench: semid's RQ-VAE vs plain residual k-means vs FAISS ResidualQuantizer, 4 x 256.

On real sentence embeddings (``bench/make_data.py``: docstring sentences of the standard
library and common packages, embedded by all-MiniLM-L6-v2, 384-d). Every method is fitted
and scored on the same rows with ``semid_udf.model.quality``:

- ``rqvae-<grad>``: semid's RQ-VAE with the default model and training config (``fit``),
  codes as inference makes them, for each gradient estimator (straight-through, rotation
  trick); ``-norefine``: the same model before the codebook refinement;
- ``rkmeans``: residual k-means on the raw embeddings (no encoder), the same k-means++ and
  Lloyd iterations as semid's codebook init;
- ``faiss_rq_latent``: FAISS ``ResidualQuantizer`` (beam 5) on the RQ-VAE's latents, the
  baseline for the latent reconstruction target (input error through semid's decoder);
- ``faiss_rq_input``: FAISS RQ (beam 5) on the raw embeddings;
- ``..., nearest_free cap C`` (``--resolve-cap 8,4``): a semid checkpoint's codes with the
  collisions resolved by meaning as ``semid-assign`` does with ``output.collisions=nearest_free``
  and ``output.max_bucket_size=C`` (``CodeEncoder.candidates`` then ``collisions.resolve`` per
  code prefix, items ordered by row = ``item_id``), scored the same way, with the latent
  error of the resolved codes and how many items moved;
- ``rqvae-<grad>-balanced`` (``--balance-last-level N``): trained with the last level's
  assignment balanced by N Sinkhorn-Knopp iterations (``train.balance_last_level``);
- ``--variants NAME,...``: semid models exactly as ``semid-train`` fits them (``train.fit``
  with the default config plus the variant's settings, codebook refinement included), each
  with its ``--resolve-cap`` rows: ``rqvae``, ``rqvae-latent64``, ``rqkmeans``,
  ``rqkmeans-balanced-last``, ``rqkmeans-balanced-all`` (see ``VARIANTS``).

    OMP_NUM_THREADS=1 .venv/bin/python bench/make_data.py --rows 220000
    OMP_NUM_THREADS=1 .venv/bin/python bench/quality.py [--rows 220000] [--grads ste,rotation] [--resolve-cap 8,4]
    OMP_NUM_THREADS=1 .venv/bin/python bench/quality.py --checkpoint DIR --skip rkmeans,faiss_rq_input,faiss_rq_latent \
        --resolve-cap 8,4 --out bench/out/quality-DIR    # score one checkpoint only (and its resolved rows)
    OMP_NUM_THREADS=1 .venv/bin/python bench/quality.py --grads "" --skip rkmeans,faiss_rq_input,faiss_rq_latent \
        --variants rqkmeans,rqkmeans-balanced-last --resolve-cap 8 --out bench/out/quality-kinds

Writes ``bench/out/quality/results.json``, ``results.md`` (the table for QUALITY.md) and the
plots of each method under ``bench/out/quality/<method>/``. Single-threaded by default.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from semid_udf.config import OutputConfig  # noqa: E402  (light: no torch)
from semid_udf.model.train import BALANCE_EPSILON  # noqa: E402
DATA = ROOT / "bench" / "data" / "minilm.npy"
OUT = ROOT / "bench" / "out" / "quality"
log = logging.getLogger("bench.quality")

GRADS = ("ste", "rotation")  # gradient through the quantiser (semid_udf.model.train.fit's ``grad``)
# --variants: name -> (model.*, train.*) settings on top of semid's defaults, as --set would give them
VARIANTS = {
    "rqvae": ({}, {}),
    "rqvae-latent64": ({"latent_dim": 64}, {}),
    "rqkmeans": ({"kind": "rqkmeans"}, {}),
    "rqkmeans-balanced-last": ({"kind": "rqkmeans"}, {"kmeans_balance": "last"}),
    "rqkmeans-balanced-all": ({"kind": "rqkmeans"}, {"kmeans_balance": "all"}),
}


def score(name: str, codes: np.ndarray, x: np.ndarray, fit_s: float, recon: dict, args) -> dict:
    from semid_udf.model import quality

    rep = quality.code_report(codes, 256, x, nn_sample=args.nn_sample, seed=0)
    rep.update(method=name, fit_seconds=round(fit_s, 1), reconstruction=recon, targets=quality.targets(rep))
    quality.plot(codes, 256, OUT / slug(name), title=name)
    c, b = rep["coherence"], rep["buckets"]
    log.info("%-22s util %s unique %.4f largest %d p99(items) %d in>8 %d  recon %s  nn-first %.3f (%.1fx) "
             "first-two %.3f (%.1fx)  fit %.0fs",
             name, [round(s["utilisation"], 3) for s in rep["per_level"]], rep["unique_rate"],
             b["largest_bucket"], b["p99_item_bucket_size"], b["items_in_buckets_over_8"],
             {k: round(v, 5) for k, v in recon.items()},
             c["nn_shares_first_1"], c["lift_first_1"], c["nn_shares_first_2"], c["lift_first_2"], fit_s)
    return rep


def slug(name: str) -> str:
    """A folder name for a method's plots: ``rqvae-rotation, nearest_free cap 8`` -> ``rqvae-rotation-nearest_free-cap8``."""
    return name.replace(", ", "-").replace(" cap ", "-cap").replace(" ", "-").replace("(", "").replace(")", "")


def resolve_codes(codes: np.ndarray, cand: np.ndarray, dist: np.ndarray, cap: int) -> tuple[np.ndarray, dict]:
    """``output.collisions=nearest_free`` on a whole table: ``collisions.resolve`` on each code
    prefix (nothing published; item_id = row), as ``semid-assign`` runs it per prefix group.
    Returns the resolved codes and what moved."""
    from semid_udf.model.collisions import Item, resolve

    if not (cand[:, 0] == codes[:, -1]).all():
        raise RuntimeError("CodeEncoder.candidates: the first candidate is not the item's own last code")
    n = len(codes)
    _, full_inv, full_counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    _, prefix_inv = np.unique(codes[:, :-1], axis=0, return_inverse=True)
    full_inv, prefix_inv = full_inv.reshape(-1), prefix_inv.reshape(-1)
    # resolve() moves nothing in a prefix none of whose buckets is over the cap: only those are run
    busy = np.zeros(prefix_inv.max() + 1, dtype=bool)
    busy[prefix_inv[full_counts[full_inv] > cap]] = True
    rows = np.flatnonzero(busy[prefix_inv])
    rows = rows[np.argsort(prefix_inv[rows], kind="stable")]
    out, rank, extra = codes.copy(), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.float64)
    groups = np.split(rows, np.flatnonzero(np.diff(prefix_inv[rows])) + 1) if len(rows) else []
    for g in groups:
        items = [Item(int(i), int(codes[i, -1]), tuple(int(c) for c in cand[i]), tuple(float(d) for d in dist[i]))
                 for i in g]
        for i, m in zip(g, resolve(items, {}, cap)):
            out[i, -1], rank[i], extra[i] = m.code, m.rank, m.extra
    moved = rank > 0
    sizes_after = np.unique(out, axis=0, return_counts=True)[1]
    info = {"cap": cap, "prefixes_resolved": len(groups), "moved": int(moved.sum()),
            "moved_share": float(moved.mean()),
            "moved_to_rank": {str(int(r)): int(c) for r, c in zip(*np.unique(rank[moved], return_counts=True))},
            "extra_distance_sum": float(extra.sum()),
            "extra_distance_mean": float(extra[moved].mean()) if moved.any() else 0.0,
            "extra_distance_max": float(extra.max()) if moved.any() else 0.0,
            "buckets_over_cap_after": int((sizes_after > cap).sum()),
            "items_in_buckets_over_cap_after": int(sizes_after[sizes_after > cap].sum())}
    return out, info


def resolver_rows(name: str, blob, model, x: np.ndarray, fit_s: float, training: dict, args) -> list[dict]:
    """One row per ``--resolve-cap``: the checkpoint's codes resolved by meaning at that cap."""
    from semid_udf.model import quality
    from semid_udf.config import JobConfig
    from semid_udf.model.encode import CodeEncoder

    caps = [int(c) for c in filter(None, args.resolve_cap.split(","))]
    if not caps:
        return []
    cfg = JobConfig()
    t0 = time.perf_counter()
    enc = CodeEncoder(blob, replace(cfg.encode, threads=args.threads), cfg.plugin)
    codes, ok, cand, dist = enc.candidates(x, args.candidates)
    if not ok.all():
        raise RuntimeError(f"{name}: {int((~ok).sum())} rows with a non-finite latent")
    cand_s = time.perf_counter() - t0
    base = quality.reconstruction(model, x, codes=codes)
    beam = int(blob.model.get("beam", 1))
    rows = []
    for cap in caps:
        t1 = time.perf_counter()
        resolved, info = resolve_codes(codes, cand, dist, cap)
        info["resolve_seconds"] = round(time.perf_counter() - t1 + cand_s, 1)
        recon = quality.reconstruction(model, x, codes=resolved)
        # the resolver's extra distances are exactly the added squared latent error
        added = (recon["latent_mse"] - base["latent_mse"]) * len(x)
        log.info("%s cap %d: %d items moved (%s by rank), added latent error %.2f (sum of extra distances %.2f), "
                 "%d buckets still over the cap", name, cap, info["moved"], info["moved_to_rank"], added,
                 info["extra_distance_sum"], info["buckets_over_cap_after"])
        rep = score(f"{name}, beam {beam}, nearest_free cap {cap}", resolved, x, fit_s, recon, args)
        rep["resolver"] = info
        rep["training"] = training
        rows.append(rep)
    return rows


def decode_input(model, z: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return np.concatenate([model.decoder(torch.from_numpy(z[s:s + 8192])).numpy() for s in range(0, len(z), 8192)])


def errors(x: np.ndarray, x_hat: np.ndarray, z: np.ndarray | None = None, z_hat: np.ndarray | None = None) -> dict:
    out = {}
    if z is not None:
        e = float(((z - z_hat) ** 2).sum())
        out.update(latent_mse=e / len(z), latent_relative=e / float((z ** 2).sum()))
    e = float(((x - x_hat) ** 2).sum())
    out.update(input_mse=e / len(x), input_relative=e / float((x ** 2).sum()))
    return out


def run_rqvae(x: np.ndarray, grad: str, args) -> tuple[list[dict], object]:
    """Train once with ``grad``; score the codebooks as trained (EMA only) and after refinement.

    ``fit(refine_iters=0)`` then ``refine_codebooks`` is exactly what ``fit`` does by default."""
    import torch

    from semid_udf.model.checkpoint import read_checkpoint, save_checkpoint
    from semid_udf.config import JobConfig
    from semid_udf.model.encode import CodeEncoder
    from semid_udf.model.quality import latents, reconstruction
    from semid_udf.model.train import REFINE_ITERS, fit, refine_codebooks

    cfg = JobConfig()
    if args.model_beam:
        cfg = replace(cfg, model=replace(cfg.model, beam=args.model_beam))
    train_cfg = replace(cfg.train, threads=args.threads, epochs=args.epochs, sample_size=len(x),
                        balance_last_level=args.balance_last_level)
    t0 = time.perf_counter()
    model, meta = fit(x, cfg.model, train_cfg, grad=grad, refine_iters=0, balance_epsilon=args.balance_epsilon)
    fit_s = time.perf_counter() - t0
    reports = []
    variant = f"rqvae-{grad}" + ("-balanced" if args.balance_last_level > 0 else "")
    for refined in (False, True):
        name = variant + ("" if refined else "-norefine")
        if refined:
            t1 = time.perf_counter()
            meta["refinement"] = refine_codebooks(model, torch.from_numpy(latents(model, x)), REFINE_ITERS)
            fit_s += time.perf_counter() - t1
        ck = OUT / name / "checkpoint"
        save_checkpoint(model, model.cfg, ck, training=meta)
        codes = CodeEncoder(read_checkpoint(ck), replace(cfg.encode, threads=args.threads), cfg.plugin)(x)  # as assign does
        rep = score(name, codes, x, fit_s, reconstruction(model, x), args)
        rep["training"] = {k: v for k, v in meta.items() if k != "history"}
        reports.append(rep)
        if refined:  # the checkpoint semid-train would write: its collisions resolved by meaning
            reports += resolver_rows(name, read_checkpoint(ck), model, x, fit_s, rep["training"], args)
    torch.set_num_threads(args.threads)
    return reports, model


def run_variant(x: np.ndarray, name: str, args) -> list[dict]:
    """Fit one of ``VARIANTS`` as ``semid-train`` would (``train.fit``, refinement included),
    score its codes as ``semid-assign`` publishes them, and its resolved rows."""
    from semid_udf.model.checkpoint import read_checkpoint, save_checkpoint
    from semid_udf.config import JobConfig
    from semid_udf.model.encode import CodeEncoder
    from semid_udf.model.quality import reconstruction
    from semid_udf.model.train import fit

    if name not in VARIANTS:
        raise SystemExit(f"--variants: expected names among {', '.join(VARIANTS)}; got {name!r}")
    model_set, train_set = VARIANTS[name]
    cfg = JobConfig()
    model_cfg = replace(cfg.model, **model_set)
    train_cfg = replace(cfg.train, threads=args.threads, sample_size=len(x), **train_set)
    if args.model_beam:
        model_cfg = replace(model_cfg, beam=args.model_beam)
    model_cfg.validate()
    train_cfg.validate()
    t0 = time.perf_counter()
    model, meta = fit(x, model_cfg, train_cfg)
    fit_s = time.perf_counter() - t0
    ck = OUT / name / "checkpoint"
    save_checkpoint(model, model.cfg, ck, training=meta)
    blob = read_checkpoint(ck)
    codes = CodeEncoder(blob, replace(cfg.encode, threads=args.threads), cfg.plugin)(x)  # as assign does
    label = f"{name}, beam {model_cfg.beam}"
    rep = score(label, codes, x, fit_s, reconstruction(model, x), args)
    rep["training"] = {k: v for k, v in meta.items() if k != "history"}
    return [rep] + resolver_rows(name, blob, model, x, fit_s, rep["training"], args)


def run_rkmeans(x: np.ndarray, args) -> dict:
    import torch

    from semid_udf.model.coder import ResidualQuantizer
    from semid_udf.model.train import kmeans

    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    r = torch.from_numpy(x.copy())
    books = []
    for _ in range(4):
        c, _ = kmeans(r, 256, args.kmeans_iters, gen)
        books.append(c)
        r = r - c[ResidualQuantizer.nearest(r, c)]
    fit_s = time.perf_counter() - t0
    q = ResidualQuantizer(4, 256, x.shape[1])
    q.codebooks.copy_(torch.stack(books))
    with torch.no_grad():
        codes, xq, _ = q(torch.from_numpy(x))
    return score("rkmeans", codes.numpy(), x, fit_s, errors(x, xq.numpy()), args)


def faiss_rq(v: np.ndarray, beam: int, threads: int = 1):
    import faiss

    faiss.omp_set_num_threads(threads)
    rq = faiss.ResidualQuantizer(v.shape[1], 4, 8)
    rq.max_beam_size = beam
    t0 = time.perf_counter()
    rq.train(np.ascontiguousarray(v))
    fit_s = time.perf_counter() - t0
    packed = rq.compute_codes(np.ascontiguousarray(v))
    v_hat = rq.decode(packed)
    rq.max_beam_size = 1  # the same codebooks, encoded greedily as semid's inference does
    greedy = rq.decode(rq.compute_codes(np.ascontiguousarray(v)))
    log.info("FAISS RQ relative error with its codebooks: beam %d %.5f, greedy %.5f", beam,
             float(((v - v_hat) ** 2).sum() / (v ** 2).sum()), float(((v - greedy) ** 2).sum() / (v ** 2).sum()))
    codes = packed.astype(np.int64)  # 4 codes x 8 bits: byte m is the code of level m
    books = faiss.vector_to_array(rq.codebooks).reshape(4, 256, v.shape[1])
    check = sum(books[m][codes[:, m]] for m in range(4))
    if not np.allclose(check, v_hat, atol=1e-4):
        raise RuntimeError("FAISS codes do not decode to FAISS's reconstruction: byte layout assumption wrong")
    return codes, v_hat, fit_s


def main() -> None:
    global OUT
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DATA), help="float32 [n, d] .npy (default: bench/data/minilm.npy)")
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--rows", type=int, default=0, help="first N rows of the data (0 = all)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--kmeans-iters", type=int, default=20)
    p.add_argument("--nn-sample", type=int, default=20_000)
    p.add_argument("--beam", type=int, default=5, help="FAISS's beam width")
    p.add_argument("--model-beam", type=int, default=0,
                   help="semid's model.beam (0 = the default); with --checkpoint, re-score it at this width")
    p.add_argument("--grads", default="ste,rotation", help=f"RQ-VAE variants, one training each: {','.join(GRADS)}")
    p.add_argument("--checkpoint", help="score this semid checkpoint (and FAISS on its latents) instead of training")
    p.add_argument("--skip", default="",
                   help="comma list of checkpoint,rkmeans,faiss_rq_latent,faiss_rq_input to skip")
    p.add_argument("--resolve-cap", default="",
                   help="comma list of caps C: also score semid's codes resolved by output.collisions=nearest_free "
                        "with output.max_bucket_size=C (e.g. 8,4)")
    p.add_argument("--candidates", type=int, default=OutputConfig().candidates,
                   help="output.candidates for the resolver rows: last-level codes an item may move to")
    p.add_argument("--variants", default="", help=f"comma list of semid models to fit and score: {','.join(VARIANTS)}")
    p.add_argument("--balance-last-level", type=int, default=0,
                   help="train.balance_last_level: Sinkhorn iterations balancing the last level in training (0 = off)")
    p.add_argument("--balance-epsilon", type=float, default=BALANCE_EPSILON,
                   help="entropy weight of the balanced assignment (distances scaled to [-1, 1])")
    args = p.parse_args()
    if args.balance_last_level and args.checkpoint:
        p.error("--balance-last-level trains a model; --checkpoint scores one: give one of them")
    OUT = Path(args.out)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    import torch

    torch.set_num_threads(args.threads)
    for cap in filter(None, args.resolve_cap.split(",")):
        if not cap.isdigit() or int(cap) <= 0:
            p.error(f"--resolve-cap: expected positive integers, got {cap!r}")
    if not Path(args.data).is_file():
        raise SystemExit(f"{args.data} missing: run bench/make_data.py first")
    x = np.load(args.data)
    if args.rows:
        x = x[:args.rows]
    log.info("data: %d x %d real sentence embeddings", *x.shape)
    OUT.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))
    results, first_model = [], None
    if args.checkpoint:
        from semid_udf.model.checkpoint import load_checkpoint

        model, blob = load_checkpoint(args.checkpoint)
        if args.model_beam:  # re-score the same weights at another beam width
            import dataclasses

            from semid_udf.model.checkpoint import CheckpointBlob

            config = json.loads(json.dumps(blob.config))
            config["model"]["beam"] = args.model_beam
            blob = CheckpointBlob(config=config, weights=blob.weights)
            model.cfg = dataclasses.replace(model.cfg, beam=args.model_beam)
        first_model = (Path(args.checkpoint).parent.name, model)
        args.grads = ""
        if "checkpoint" not in skip:
            from dataclasses import replace

            from semid_udf.config import JobConfig
            from semid_udf.model.encode import CodeEncoder
            from semid_udf.model.quality import reconstruction

            cfg = JobConfig()
            codes = CodeEncoder(blob, replace(cfg.encode, threads=args.threads), cfg.plugin)(x)  # as assign does
            rep = score(first_model[0], codes, x, blob.config.get("training", {}).get("fit_seconds", 0.0),
                        reconstruction(model, x), args)
            rep["training"] = {k: v for k, v in blob.config.get("training", {}).items() if k != "history"}
            results.append(rep)
            results += resolver_rows(first_model[0], blob, model, x, rep["fit_seconds"], rep["training"], args)
    for grad in filter(None, args.grads.split(",")):
        reps, model = run_rqvae(x, grad, args)
        results.extend(reps)
        first_model = first_model or (f"rqvae-{grad}", model)
    for name in filter(None, args.variants.split(",")):
        results.extend(run_variant(x, name, args))
    if "rkmeans" not in skip:
        results.append(run_rkmeans(x, args))
    if first_model and "faiss_rq_latent" not in skip:
        from semid_udf.model.quality import latents

        variant, model = first_model
        z = latents(model, x)
        codes, z_hat, fit_s = faiss_rq(z, args.beam, args.threads)
        rep = score(f"faiss_rq_latent({variant})", codes, x, fit_s,
                    errors(x, decode_input(model, z_hat), z, z_hat), args)
        results.append(rep)
    if "faiss_rq_input" not in skip:
        codes, x_hat, fit_s = faiss_rq(x, args.beam, args.threads)
        results.append(score("faiss_rq_input", codes, x, fit_s, errors(x, x_hat), args))
    meta = {"rows": int(len(x)), "dim": int(x.shape[1]), "threads": args.threads, "epochs": args.epochs,
            "beam": args.beam, "nn_sample": args.nn_sample, "torch": torch.__version__,
            "resolve_caps": args.resolve_cap, "candidates": args.candidates,
            "balance_last_level": args.balance_last_level, "balance_epsilon": args.balance_epsilon,
            "variants": args.variants, "data": str(args.data)}
    (OUT / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    (OUT / "results.md").write_text(table(results, meta))
    log.info("wrote %s and results.md", OUT / "results.json")


def table(results: list[dict], meta: dict) -> str:
    rows = ["| method | utilisation per level | min perplexity | unique before suffix | largest bucket "
            "| p99 bucket (items) | items in buckets > 8 "
            "| latent rel. err | input rel. err | NN shares 1st code (x chance) | NN shares 1st two (x chance) | fit s |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        c, rec, b = r["coherence"], r["reconstruction"], r["buckets"]
        lat = f"{rec['latent_relative']:.4f}" if "latent_relative" in rec else "n/a"
        util = " / ".join(f"{s['utilisation']:.3f}" for s in r["per_level"])
        method = r["method"] + (f" ({r['resolver']['moved']:,} moved)" if "resolver" in r else "")
        rows.append(
            f"| {method} | {util} "
            f"| {min(s['perplexity'] for s in r['per_level']):.0f} | {r['unique_rate']:.4f} "
            f"| {b['largest_bucket']} | {b['p99_item_bucket_size']} "
            f"| {b['items_in_buckets_over_8']:,} ({100 * b['share_in_buckets_over_8']:.2f}%) "
            f"| {lat} | {rec['input_relative']:.4f} "
            f"| {c['nn_shares_first_1']:.3f} ({c['lift_first_1']:.0f}x) "
            f"| {c['nn_shares_first_2']:.3f} ({c['lift_first_2']:.0f}x) | {r['fit_seconds']:.0f} |")
    head = (f"{meta['rows']} x {meta['dim']} all-MiniLM-L6-v2 embeddings ({meta.get('data', '')}), 4 x 256, "
            f"{meta['threads']} thread(s), "
            f"RQ-VAE {meta['epochs']} epochs, FAISS beam {meta['beam']}, coherence on {meta['nn_sample']} items\n\n")
    return head + "\n".join(rows) + "\n"


if __name__ == "__main__":
    main()
