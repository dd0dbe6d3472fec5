"""The tables of bench/QUALITY.md's "Which kind" section, from bench/quality_kinds.sh's output.

    .venv/bin/python bench/kinds_md.py        # prints one Markdown table per data set
"""
from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
HEAD = ("| method | min utilisation | min perplexity | unique before suffix | largest bucket | p99 bucket (items) "
        "| items in buckets > 8 | latent rel. err | input rel. err | NN shares 1st code (x chance) "
        "| NN shares 1st two (x chance) | fit s |\n" + "| --- " * 12 + "|")


def row(r: dict) -> str:
    c, rec, b = r["coherence"], r["reconstruction"], r["buckets"]
    lat = f"{rec['latent_relative']:.4f}" if "latent_relative" in rec else "n/a"
    method = r["method"] + (f" ({r['resolver']['moved']:,} moved)" if "resolver" in r else "")
    return (f"| {method} | {min(s['utilisation'] for s in r['per_level']):.3f} "
            f"| {min(s['perplexity'] for s in r['per_level']):.0f} | {r['unique_rate']:.4f} | {b['largest_bucket']} "
            f"| {b['p99_item_bucket_size']} | {b['items_in_buckets_over_8']:,} ({100 * b['share_in_buckets_over_8']:.2f}%) "
            f"| {lat} | {rec['input_relative']:.4f} | {c['nn_shares_first_1']:.3f} ({c['lift_first_1']:.0f}x) "
            f"| {c['nn_shares_first_2']:.3f} ({c['lift_first_2']:.0f}x) | {r['fit_seconds']:.0f} |")


def main() -> None:
    for data in ("minilm", "pypi"):
        results = []
        for part in ("vae", "km"):
            f = OUT / f"kinds-{data}-{part}" / "results.json"
            if f.is_file():
                results += json.loads(f.read_text())["results"]
        if results:
            print(f"{data}\n\n{HEAD}\n" + "\n".join(row(r) for r in results) + "\n")


if __name__ == "__main__":
    main()
