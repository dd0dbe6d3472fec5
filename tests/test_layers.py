"""The library's layer rules, read from its imports. The package is laid out by layer (one
sub-package each); the only thing listed by hand here is the order of the layers:

1. a module imports only from its own layer and the layers before it (the base modules at the
   package's top, then ``model``, ``worker``, ``spark``, ``table``); the entry points (``cli``
   and ``daemon``) may import anything;
2. Spark only at the edges: the base modules and the model layer (model, checkpoint, config,
   adapter, the pure encode function, training, quality, paths, errors) import no pyspark,
   neither themselves nor through any module of the package they import;
3. no module imports another module's private names (a shared piece is a public function);
4. the library is lint-clean (ruff, configured in pyproject.toml).
"""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "semid_udf"
LAYERS = ("", "model", "worker", "spark", "table")  # "": the base modules at the package's top
ENTRY_POINTS = ("cli", "daemon")
# What must run with no Spark at all (a driver without a JVM, a Python worker, a notebook on a
# laptop): the base and the model layer.
NO_SPARK_LAYERS = ("", "model")


def layer_of(module: str) -> str | None:
    """The layer of a module name relative to the package (``table.publish`` -> ``table``);
    None for an entry point."""
    head = module.split(".")[0]
    if head in ENTRY_POINTS:
        return None
    return head if "." in module and head in LAYERS else ""


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
    """Modules of the package that ``name`` imports (``semid_udf.x.y``, ``from semid_udf.x import y``
    or relative)."""
    deps = set()
    here = name.split(".")[:-1]
    for mod, names, level in imports(trees[name]):
        if level:
            base = here[:len(here) - (level - 1)] if level > 1 else here
            mod = ".".join([*base, mod] if mod else base)
        elif mod == "semid_udf" or mod.startswith("semid_udf."):
            mod = mod.removeprefix("semid_udf").removeprefix(".")
        else:
            continue
        for n in names or [""]:
            full = f"{mod}.{n}" if mod and n else (mod or n)
            if full in trees or f"{full}.__init__" in trees:
                deps.add(full)
            elif mod in trees:
                deps.add(mod)
    return {d for d in deps if d in trees}


def test_every_module_imports_only_its_own_layer_and_the_ones_before():
    trees = modules()
    assert {m.split(".")[0] for m in trees if "." in m} <= set(LAYERS) | set(ENTRY_POINTS) | {"__init__"}, \
        "a sub-package that is not a layer: add it to LAYERS in its place"
    found = []
    for name in trees:
        mine = layer_of(name)
        if mine is None:
            continue
        for dep in package_deps(name, trees):
            theirs = layer_of(dep)
            if theirs is None or LAYERS.index(theirs) > LAYERS.index(mine):
                found.append(f"{name} (layer {mine or 'base'}) imports {dep} (layer {theirs or 'entry point'})")
    assert found == []


def test_the_no_spark_layers_import_no_pyspark_even_transitively():
    trees = modules()
    starts = [m for m in trees if layer_of(m) in NO_SPARK_LAYERS]
    assert "model.coder" in starts and "config" in starts
    for start in starts:
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
            if private and target in trees:
                found.append(f"{name} imports {private} from {target}")
    assert found == []


def test_the_library_is_lint_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is a test dependency (pip install -e '.[test]')"
    r = subprocess.run([ruff, "check", "semid_udf", "jobs"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:]
