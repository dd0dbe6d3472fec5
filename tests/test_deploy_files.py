"""Deployment files without Spark: the wheel's contents, conf/ profiles, the Databricks
bundle, the configuration reference (docs/configuration.md), and entry points that Databricks can call."""
from __future__ import annotations

import configparser
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from semid_udf import docs
from semid_udf.config import load_config, reference_rows

from .conftest import ROOT

PROFILES = ["local", "cluster", "databricks"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    p = subprocess.run(["bash", str(ROOT / "scripts" / "build_wheel.sh"), str(out)], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable}, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return Path(p.stdout.strip())


def wheel_scripts(wheel: Path) -> dict[str, str]:
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/entry_points.txt"))
        ep = configparser.ConfigParser()
        ep.read_string(z.read(name).decode())
    return dict(ep["console_scripts"])


def test_wheel_holds_both_packages_and_every_declared_command(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    # every module of the package and its sub-packages (one left out of pyproject's list would be missing)
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "semid_udf").rglob("*.py") if "__pycache__" not in p.parts}
    assert len(modules) > 40 and "semid_udf/worker/arrow.py" in modules
    assert sorted(modules - names) == []
    assert "semid_udf/fairscheduler.xml" in names
    # no top-level package named jobs: it would shadow (or be shadowed by) a user's own
    assert not any(n.startswith("jobs/") for n in names)
    assert not any("__pycache__" in n or n.startswith(("tests/", "build/")) for n in names)
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    scripts = wheel_scripts(wheel)
    assert scripts == declared
    assert {"semid-train", "semid-assign", "semid-demo"} <= set(scripts)
    for target in scripts.values():  # each points at a module in the wheel
        assert target.split(":")[0].replace(".", "/") + ".py" in names


@pytest.mark.parametrize("profile", PROFILES)
def test_profiles_load(profile):
    cfg = load_config(ROOT / "conf" / f"{profile}.yaml")
    assert cfg.output.arrow_batch % cfg.encode.micro_batch == 0
    gpu_keys = [k for k in cfg.spark if ".resource.gpu." in k]
    if profile == "cluster":
        assert float(cfg.spark["spark.executor.resource.gpu.amount"]) >= 1
        assert 0 < float(cfg.spark["spark.task.resource.gpu.amount"]) <= 1
        assert cfg.spark["spark.executor.resource.gpu.discoveryScript"].startswith("/")
        assert cfg.encode.device == "cuda"
    else:  # local mode fails or hangs with GPU amounts; Databricks sets them on the cluster
        assert gpu_keys == []


def test_bundle_jobs_name_entry_points_that_the_wheel_has(wheel):
    bundle = yaml.safe_load((ROOT / "databricks.yml").read_text())
    scripts = wheel_scripts(wheel)
    name = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"]
    assert set(bundle["targets"]) >= {"dev", "prod"}
    assert bundle["targets"]["dev"].get("mode") == "development"
    assert bundle["targets"]["prod"].get("mode") == "production"
    jobs = bundle["resources"]["jobs"]
    named = {}
    for key, job in jobs.items():
        clusters = {c["job_cluster_key"]: c["new_cluster"] for c in job["job_clusters"]}
        for task in job["tasks"]:
            wt = task["python_wheel_task"]
            assert wt["package_name"] == name
            named[wt["entry_point"]] = key
            cluster = clusters[task["job_cluster_key"]]
            version = cluster["spark_version"]
            if version.startswith("${var."):
                version = bundle["variables"][version[6:-1]]["default"]
            assert "gpu" in version, f"{key}: expected a GPU runtime, got {version}"
            assert int(version.split(".")[0]) >= 17, f"{key}: semid needs Spark >= 4 (DBR 17+), got {version}"
            assert cluster["node_type_id"]
            assert {"whl": "./dist/*.whl"} in task["libraries"]
            params = wt["parameters"]
            conf = params[params.index("--config") + 1]
            assert conf.endswith("/conf/databricks.yaml") and (ROOT / "conf" / "databricks.yaml").is_file()
    assert {"semid-train", "semid-assign"} <= set(named)
    for entry_point in named:
        assert entry_point in scripts, f"databricks.yml names {entry_point!r}; the wheel has {sorted(scripts)}"
    assert "build_wheel.sh" in bundle["artifacts"]["semid_wheel"]["build"]


def test_every_config_key_has_a_meaning():
    entries = docs.reference_entries()
    assert [e[0] for e in entries] == [r[0] for r in reference_rows()]
    assert all(meaning for _, _, _, meaning in entries)


def test_a_key_without_a_meaning_is_an_error(monkeypatch):
    monkeypatch.setattr(docs, "field_comments", lambda cls: {})
    with pytest.raises(ValueError, match="config keys without a meaning: model.kind"):
        docs.reference_entries()


def test_configuration_reference_is_current():
    assert docs.PAGE == ROOT / "docs" / "configuration.md"
    text = docs.PAGE.read_text()
    assert docs.updated(text) == text, "docs/configuration.md is stale: run  python -m semid_udf.docs"
    for key, default, _, _ in docs.reference_entries():
        assert f"| `{key}` | `{default}` |" in text


def test_updated_replaces_only_the_marked_block():
    text = f"# t\nbefore\n{docs.START}\nold stuff\n{docs.END}\nafter\n"
    new = docs.updated(text)
    assert new.startswith("# t\nbefore\n") and new.endswith(f"{docs.END}\nafter\n")
    assert "old stuff" not in new and "`model.levels`" in new
    assert docs.updated(new) == new
    with pytest.raises(ValueError, match="exactly one"):
        docs.updated("no markers")


def test_docs_check_exit_status(tmp_path):
    stale = tmp_path / "configuration.md"
    stale.write_text(f"x\n{docs.START}\n{docs.END}\n")
    assert docs.main(["--check", str(stale)]) == 1
    assert docs.main([str(stale)]) == 0
    assert docs.main(["--check", str(stale)]) == 0


@pytest.mark.parametrize("module", ["semid_udf.cli.train_rqvae", "semid_udf.cli.assign_semantic_ids",
                                    "semid_udf.cli.demo"])
def test_entry_points_return_on_success_and_exit_on_failure(module, monkeypatch):
    """Databricks marks a wheel task failed on any SystemExit, even 0: success must return."""
    import importlib

    job = importlib.import_module(module)
    monkeypatch.setattr(job, "main", lambda argv=None: 0)
    assert job.cli() is None
    monkeypatch.setattr(job, "main", lambda argv=None: 2)
    with pytest.raises(SystemExit) as e:
        job.cli()
    assert e.value.code == 2
