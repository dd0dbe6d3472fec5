"""The library's layer rules, read from its imports (nothing here lists the modules by hand
except the rule itself):

1. Spark only at the edges: the model and everything it is built from (model, checkpoint,
   config, adapter, the pure encode function, training, quality, paths, errors) import no
   pyspark, neither themselves nor through any module of the package they import;
2. no module imports another module's private names (a shared piece is a public function);
3. the library is lint-clean (ruff, configured in pyproject.toml).
"""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "semid_udf"
# The layer that must run with no Spark at all (a driver without a JVM, a Python worker, a
# notebook on a laptop): the model, its checkpoint and config, and what turns vectors into codes.
NO_SPARK = ("errors", "config", "paths", "model", "checkpoint", "adapter", "encode", "train", "quality", "collisions",
            "importer", "docs")
# Known debt, to be folded into public functions (the commit module): the stream reuses the batch run's steps.
PRIVATE_IMPORTS_ALLOWED = {("stream", "publish")}


def modules() -> dict[str, ast.Module]:
    return {str(p.relative_to(PKG).with_suffix("")).replace("/", "."): ast.parse(p.read_text())
            for p in PKG.rglob("*.py")}


def imports(tree: ast.Module) -> list[tuple[str, list[str], int]]:
    """(module imported, names imported from it, level) of every import, at any depth."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, [], 0) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.module or "", [a.name for a in node.names], node.level))
    return out


def package_deps(name: str, trees: dict[str, ast.Module]) -> set[str]:
    """Modules of the package that ``name`` imports (relative or ``semid_udf.x``)."""
    deps = set()
    for mod, names, level in imports(trees[name]):
        if level == 1:
            deps |= {mod} if mod else {n for n in names if n in trees}
        elif mod.startswith("semid_udf."):
            deps.add(mod.removeprefix("semid_udf."))
    return {d for d in deps if d in trees}


def test_the_no_spark_layer_imports_no_pyspark_even_transitively():
    trees = modules()
    assert set(NO_SPARK) <= set(trees), sorted(set(NO_SPARK) - set(trees))
    for start in NO_SPARK:
        seen, todo = set(), [start]
        while todo:
            m = todo.pop()
            if m in seen:
                continue
            seen.add(m)
            spark = [mod for mod, _, level in imports(trees[m]) if level == 0 and mod.split(".")[0] == "pyspark"]
            assert not spark, f"{start} reaches pyspark through {m} (imports {spark})"
            todo += sorted(package_deps(m, trees))


def test_no_module_imports_another_modules_private_names():
    trees = modules()
    found = []
    for name, tree in trees.items():
        for mod, names, level in imports(tree):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            target = mod if level == 1 else mod.removeprefix("semid_udf.")
            if private and target in trees and (name, target) not in PRIVATE_IMPORTS_ALLOWED:
                found.append(f"{name} imports {private} from {target}")
    assert found == []


def test_the_library_is_lint_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is a test dependency (pip install -e '.[test]')"
    r = subprocess.run([ruff, "check", "semid_udf", "jobs"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:]
