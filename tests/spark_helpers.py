"""Small helpers for the few Spark tests (input files, reading tables back)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from semid_udf.config import JobConfig, merge

TEST_CFG = {"encode": {"micro_batch": 64}, "output": {"arrow_batch": 128}}


def config(**sections) -> JobConfig:
    data = {k: dict(v) for k, v in TEST_CFG.items()}
    for k, v in sections.items():
        data.setdefault(k, {}).update(v)
    return merge(JobConfig(), data).validate()


def write_input(path: Path, ids, vectors, files: int = 2, id_type=pa.int64()) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    idx = np.array_split(np.arange(len(ids)), files)
    for i, part in enumerate(idx):
        t = pa.table({"item_id": pa.array([ids[j] for j in part], id_type),
                      "embedding": pa.array([vectors[j] for j in part], pa.list_(pa.float32()))})
        pq.write_table(t, path / f"part-{i}.parquet")
    return path


def table_rows(spark, name: str, version: str):
    df = spark.table(name).where(f"model_version = '{version}'").drop("run_id").toPandas()
    return df.sort_values("item_id").reset_index(drop=True)


def committed_files(root: Path, name: str, model_version: str | None = None) -> list[Path]:
    """The data files of the last commit (of ``model_version``, or of the latest version),
    found as the file recipes of docs/usage.md find them: from the manifest, never by listing."""
    import pyarrow.dataset as ds

    runs = ds.dataset(root / f"{name}_manifest", format="parquet").to_table().to_pylist()
    done = [r for r in runs if r["status"] == "complete" and model_version in (None, r["model_version"])]
    assert done, f"no complete run of {name} in its manifest"
    last = max(done, key=lambda r: (r["finished_at"], r["seq"]))
    return [root / f"{name}_data" / f for f in last["files"]]


def published_files(wh: Path, table: str, model_version: str | None = None) -> dict:
    """A table's committed rows read straight from its Parquet files (no Spark), sorted by
    item_id, without run_id (which differs between otherwise identical runs)."""
    import pyarrow.dataset as ds

    db, name = table.split(".")
    files = committed_files(wh / f"{db}.db", name, model_version)
    t = ds.dataset([str(f) for f in files], format="parquet", partitioning="hive").to_table()
    return t.drop_columns([c for c in ("run_id",) if c in t.column_names]).sort_by("item_id").to_pydict()


def failpoint(label: str, release: Path | None = None) -> dict[str, str]:
    """The environment that makes a semid process pause at the first stage whose label starts
    with ``label`` (tests/failpoint/sitecustomize.py), to be killed there; or, with ``release``,
    until that file exists."""
    here = str(Path(__file__).resolve().parent / "failpoint")
    path = os.environ.get("PYTHONPATH")
    env = {"SEMID_FAILPOINT": label, "PYTHONPATH": here + (os.pathsep + path if path else "")}
    if release is not None:
        env["SEMID_FAILPOINT_RELEASE"] = str(release)
    return env
