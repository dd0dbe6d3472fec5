"""No random number can stand in for an ID: the modules that turn embeddings into published
codes draw none, and training draws only from its seeded generator (sample order, k-means++
seeds, dead-code re-seeds), so a checkpoint is a deterministic function of data and seed."""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "semid_udf"
# The only modules that may draw random numbers, and why; every other module of the package
# (found, not listed: a new module is covered the day it is added) draws none.
MAY_DRAW = {"train": "its seeded generator only (tested below)",
            "quality": "it samples items for its report, never a code",
            "importer": "a seeded normal sample probes a user's model when none is given; its codes are never published",
            "demo": "semid-demo makes its demo catalogue's vectors (input data, not IDs)"}
INFERENCE = sorted(str(p.relative_to(PKG).with_suffix("")) for p in PKG.rglob("*.py")
                   if p.stem not in MAY_DRAW and p.name != "__init__.py")
RANDOM = {"rand", "randn", "randint", "randperm", "rand_like", "random", "random_", "multinomial", "bernoulli",
          "normal", "normal_", "uniform", "uniform_", "shuffle", "permutation", "choice", "default_rng", "seed",
          "manual_seed", "Generator"}


def calls(module: str) -> list[ast.Call]:
    tree = ast.parse((PKG / f"{module}.py").read_text())
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)]


def name(call: ast.Call) -> str:
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")


@pytest.mark.parametrize("module", INFERENCE)
def test_inference_modules_draw_no_random_numbers(module):
    assert len(INFERENCE) > 20  # the package was found
    drawn = [f"line {c.lineno}: {name(c)}" for c in calls(module) if name(c) in RANDOM]
    assert drawn == []
    assert "import random" not in (PKG / f"{module}.py").read_text()


def test_training_draws_only_from_its_seeded_generator():
    draws = [c for c in calls("model/train") if name(c) in RANDOM - {"manual_seed", "Generator"}]
    assert draws, "expected training's seeded draws (k-means++, dead codes, epoch order)"
    for c in draws:
        assert any(k.arg == "generator" for k in c.keywords), f"train.py line {c.lineno}: {name(c)} without generator="
