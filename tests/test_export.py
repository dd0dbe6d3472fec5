"""semid-export: tokens decode back to the table's IDs, prefixes agree with the table, the
vocabulary and manifest are right, and a rerun gives the same bytes."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from semid_udf.table.catalog import TableName
from semid_udf.table.export import export
from semid_udf.table.publish import run_assign

from .conftest import clustered
from .spark_helpers import config, published_files, write_input

L, K = 3, 16


@pytest.fixture(scope="session")  # once per worker: its tables live in the shared session
def exported(spark, tiny_blob, tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    x = clustered(500, 16, seed=101, centers=6)  # few clusters: buckets share prefixes, suffixes > 0
    inp = write_input(root / "in", list(range(7000, 7500)), [list(map(float, v)) for v in x])
    res = run_assign(spark, config(), tiny_blob, table="exp.ids", input_path=str(inp), warehouse=str(root / "wh"))
    m = export(spark, TableName.parse("exp.ids"), str(root / "out"))
    return root, res, m, published_files(root / "wh", "exp.ids")


def read(root: Path, part: str) -> dict:
    return pq.read_table(sorted((root / part).glob("*.parquet"))).to_pydict()


def test_tokens_decode_back_to_every_items_id(exported):
    root, res, m, table = exported
    tok = read(root / "out", "tokens")
    assert sorted(tok["item_id"]) == table["item_id"] and m["items"] == len(table["item_id"])
    by_id = {i: k for k, i in enumerate(table["item_id"])}
    for item, tokens, sid in zip(tok["item_id"], tok["tokens"], tok["semantic_id"]):
        k = by_id[item]
        codes = [t - level * K for level, t in enumerate(tokens[:L])]
        assert codes == [table[f"sid_{i}"][k] for i in range(L)] and all(0 <= c < K for c in codes)
        assert tokens[L] - L * K == table["sid_suffix"][k] and len(tokens) == L + 1
        assert sid == table["semantic_id"][k] == "-".join(map(str, codes + [tokens[L] - L * K]))


def test_every_prefix_lists_exactly_what_follows_it_and_how_many_items(exported):
    root, res, m, table = exported
    pre = read(root / "out", "prefixes")
    seqs = [[table[f"sid_{i}"][k] + i * K for i in range(L)] + [table["sid_suffix"][k] + L * K]
            for k in range(len(table["item_id"]))]
    expected: dict[tuple, tuple[set, int]] = {}
    for s in seqs:
        for length in range(L + 1):
            nxt, n = expected.get(tuple(s[:length]), (set(), 0))
            expected[tuple(s[:length])] = (nxt | {s[length]}, n + 1)
    got = {tuple(p): (nx, n) for p, nx, n in zip(pre["prefix"], pre["next"], pre["items"])}
    assert len(got) == len(pre["prefix"]) == m["prefixes"]  # one row per prefix
    assert {p: (sorted(nx), n) for p, (nx, n) in expected.items()} == got
    assert got[()][1] == len(seqs) and max(len(v[0]) for k, v in got.items() if len(k) == L) > 1


def test_vocabulary_and_manifest(exported):
    root, res, m, table = exported
    vocab = json.loads((root / "out" / "vocab.json").read_text())
    top = max(table["sid_suffix"])
    assert vocab["model_version"] == res.model_version and vocab["levels"] == L and vocab["codebook_size"] == K
    assert vocab["offsets"] == {"level_0": 0, "level_1": K, "level_2": 2 * K, "suffix": L * K}
    assert vocab["max_suffix"] == top and vocab["vocab_size"] == L * K + top + 1
    assert vocab["commit"]["run_id"] == res.run_id
    on_disk = json.loads((root / "out" / "manifest.json").read_text())
    assert on_disk == m
    paths = sorted(str(p.relative_to(root / "out")) for p in (root / "out").rglob("*") if p.is_file()
                   and p.name != "manifest.json")
    assert sorted(f["path"] for f in m["files"]) == paths
    for f in m["files"]:
        data = (root / "out" / f["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == f["sha256"] and len(data) == f["bytes"]


def test_the_same_commit_gives_the_same_bytes_twice(spark, exported):
    """Exported again, after the cached tables are dropped and with other shuffle settings."""
    root, res, m, table = exported
    spark.catalog.clearCache()
    spark.conf.set("spark.sql.shuffle.partitions", "7")
    try:
        again = export(spark, TableName.parse("exp.ids"), str(root / "again"))
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", "4")
    one = {p.relative_to(root / "out"): p.read_bytes() for p in (root / "out").rglob("*") if p.is_file()}
    two = {p.relative_to(root / "again"): p.read_bytes() for p in (root / "again").rglob("*") if p.is_file()}
    assert one == two and len(one) >= 4 and again == m


def test_export_errors_name_what_the_user_typed(spark, exported, tmp_path):
    import os
    import subprocess
    import sys

    from semid_udf.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--table exp.nope: expected a table semid-assign published in this "
                                          r"session's catalog, got none of that name"):
        export(spark, TableName.parse("exp.nope"), str(tmp_path / "o1"))
    with pytest.raises(ConfigError, match=r"--table nocat.exp.ids: expected a catalog this session has \(spark_catalog"):
        export(spark, TableName.parse("nocat.exp.ids"), str(tmp_path / "o2"))
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable)
    env.pop("SPARK_REMOTE", None)
    r = subprocess.run([str(Path(sys.executable).parent / "semid-export"), "--table", "exp.ids", "--warehouse",
                        str(tmp_path / "no-such-wh"), "--out", str(tmp_path / "o3")], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (f"semid-export: error: --warehouse {tmp_path / 'no-such-wh'}: expected "
                                                 "the folder semid-assign published exp.ids in, got no such folder")
    assert not (tmp_path / "no-such-wh").exists() and not (tmp_path / "o3").exists()


def test_a_reexport_cut_short_in_its_clean_up_leaves_no_manifest_beside_deleted_files(spark, exported, monkeypatch):
    import semid_udf.spark.files as files_mod

    root, res, m, table = exported
    out = root / "reexport"
    export(spark, TableName.parse("exp.ids"), str(out))
    assert (out / "manifest.json").exists()
    real, calls = files_mod.Files.delete, {"n": 0}

    def dies_after_one(self, uri):  # the process is killed right after its first deletion
        calls["n"] += 1
        if calls["n"] > 1:
            raise KeyboardInterrupt("killed")
        return real(self, uri)

    monkeypatch.setattr(files_mod.Files, "delete", dies_after_one)
    with pytest.raises(KeyboardInterrupt):
        export(spark, TableName.parse("exp.ids"), str(out))
    assert not (out / "manifest.json").exists()  # so the half-cleaned folder reads as incomplete
    assert (out / "tokens").exists()
