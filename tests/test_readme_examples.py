"""The documentation's query examples (README.md and docs/*.md; the queries are in docs/usage.md,
"Querying the IDs"), executed as written in Spark SQL, DuckDB and pandas."""
from __future__ import annotations

import re

import pytest

from semid_udf.table.publish import run_assign

from .conftest import ROOT, clustered
from .spark_helpers import config, write_input

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks(kind: str) -> list[str]:
    """Every ```{kind} block of the documentation, README.md first, then docs/*.md by name."""
    found = [b for page in DOCS for b in re.findall(rf"```{kind}\n(.*?)```", page.read_text(), flags=re.S)]
    assert found, f"no ```{kind} block in README.md or docs/*.md"
    return found


def statements(block: str) -> list[str]:
    body = "\n".join(line for line in block.splitlines() if not line.strip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


@pytest.fixture(scope="session")  # once per worker: its tables live in the shared session
def published(spark, tiny_blob, tmp_path_factory):
    root = tmp_path_factory.mktemp("readme")
    x = clustered(200, 16, seed=71)
    ids = list(range(1_000_000, 1_000_200))
    inp = write_input(root / "in", ids, [list(map(float, v)) for v in x])
    run_assign(spark, config(), tiny_blob, table="recsys.semantic_ids", input_path=str(inp), warehouse=str(root / "wh"))
    sid = spark.table("recsys.semantic_ids").where("item_id = 1000042").first()["semantic_id"]
    return root, sid


def test_spark_sql_examples(spark, published):
    _, sid = published
    results = [spark.sql(q).collect() for block in blocks("sql spark") for q in statements(block)]
    assert len(results) == 6
    assert [(r.item_id, r.semantic_id) for r in results[0]] == [(1000042, sid)]
    assert results[4][0].status == "complete" and results[4][0].rows_out == 200
    # the tokens view turns this (3 x 16) model's token sequences back into the items
    codes = [int(c) for c in sid.split("-")]
    tokens = ", ".join(str(c + level * 16) for level, c in enumerate(codes))
    back = spark.sql(f"SELECT item_id, semantic_id FROM recsys.semantic_ids_tokens WHERE tokens = array({tokens})")
    assert [(r.item_id, r.semantic_id) for r in back.collect()] == [(1000042, sid)]


def test_duckdb_examples(published, monkeypatch):
    import duckdb
    root, sid = published
    monkeypatch.chdir(root)
    con = duckdb.connect()
    last = None
    for block in blocks("sql duckdb"):
        for q in statements(block):
            last = con.execute(q).fetchall()
    assert last == [(1000042, sid)]


def test_pandas_example(published, monkeypatch):
    root, sid = published
    monkeypatch.chdir(root)
    ns: dict = {}
    exec(blocks("python pandas")[0], ns)
    assert ns["one"].tolist() == [sid] and len(ns["ids"]) == 200
