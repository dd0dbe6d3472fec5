"""output.collisions = nearest_free: the cap holds, nothing is invented, the order is fixed,
append keeps published IDs, and the manifest says what moved."""
from __future__ import annotations

import json
import random

import pytest

from semid_udf.model.collisions import Item, resolve
from semid_udf.config import EncodeConfig, PluginConfig
from semid_udf.model.encode import CodeEncoder
from semid_udf.errors import ConfigError

from .conftest import clustered


def random_items(seed: int, n: int = 60, codes: int = 6, top: int = 4) -> list[Item]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        cand = rng.sample(range(codes), top)
        dist = sorted(rng.random() for _ in range(top))
        out.append(Item(i, cand[0], tuple(cand), tuple(dist)))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_the_cap_holds_where_there_is_room_and_codes_come_from_the_candidates(seed):
    items = random_items(seed)
    published = {0: 2, 3: 5}
    moves = resolve(items, published, cap=5)
    count = dict(published)
    for it, m in zip(items, moves):
        assert m.item_id == it.item_id and m.code == it.candidates[m.rank]  # never a code it does not have
        assert m.extra == (0.0 if m.rank == 0 else pytest.approx(it.distances[m.rank] - it.distances[0]))
        count[m.code] = count.get(m.code, 0) + 1
    stuck = [m for it, m in zip(items, moves) if m.rank == 0 and count[m.code] > 5]
    for it, m in zip(items, moves):  # an item left over the cap had no candidate with room
        if m in stuck:
            assert all(count.get(c, 0) >= 5 for c in it.candidates[1:])
    assert sum(count.values()) == len(items) + 7


@pytest.mark.parametrize("seed", range(3))
def test_the_result_does_not_depend_on_the_order_items_come_in(seed):
    items = random_items(seed)
    base = {m.item_id: m for m in resolve(items, {}, cap=4)}
    shuffled = items[:]
    random.Random(99).shuffle(shuffled)
    assert {m.item_id: m for m in resolve(shuffled, {}, cap=4)} == base


def test_the_closest_items_stay_and_published_ones_count_first():
    items = [Item(i, 0, (0, 1, 2), (0.1 * i, 0.5 + 0.1 * i, 1.0 + 0.1 * i)) for i in range(5)]
    moves = resolve(items, {0: 1, 1: 1}, cap=2)
    # code 0 holds one published item: only item 0 (the closest) stays; code 1 has room for one
    assert [(m.code, m.rank) for m in moves] == [(0, 0), (1, 1), (2, 2), (2, 2), (0, 0)]
    assert moves[4].rank == 0  # no candidate had room left: stays (and the run fails on the cap)


@pytest.fixture(scope="module")
def nearest_cfg():
    from .spark_helpers import config

    return lambda **o: config(output={"collisions": "nearest_free", "max_bucket_size": 3, **o})


def test_settings_are_checked():
    from .spark_helpers import config

    with pytest.raises(ConfigError, match="expected output.max_bucket_size > 0"):
        config(output={"collisions": "nearest_free"})
    with pytest.raises(ConfigError, match="output.collisions: expected one of suffix, nearest_free"):
        config(output={"collisions": "closest"})


def test_nearest_free_in_spark_whatever_the_partitioning(spark, tiny_blob, nearest_cfg, tmp_path):
    from semid_udf import semantic_ids

    x = clustered(600, 16, seed=121, centers=12)
    df = spark.createDataFrame([(i, list(map(float, v))) for i, v in enumerate(x)], "item_id bigint, embedding array<float>")
    cfg = nearest_cfg(candidates=16, max_bucket_size=8)  # every last-level code a candidate: room for 128 per prefix
    got = {}
    for parts in (1, 5):
        res = semantic_ids(df.repartition(parts), tiny_blob, config=cfg)
        got[parts] = {r["item_id"]: tuple(r[1:]) for r in res.ids.collect()}
        report = res.collisions
        res.unpersist()
    assert got[1] == got[5]  # same input set, same IDs
    ids = got[1]
    buckets: dict[tuple, int] = {}
    for v in ids.values():
        buckets[v[:3]] = buckets.get(v[:3], 0) + 1
    assert max(buckets.values()) <= 8 and len({v[4] for v in ids.values()}) == len(ids)  # capped, unique
    # every code is the item's own, or one of its own candidates for its own prefix
    enc = CodeEncoder(tiny_blob, EncodeConfig(micro_batch=64), PluginConfig())
    codes, ok, cand, dist = enc.candidates(x, 16)
    moved = 0
    for i, v in ids.items():
        assert v[:2] == tuple(codes[i, :2])
        assert v[2] in cand[i].tolist()
        moved += v[2] != codes[i, 2]
    assert report["moved"] == moved > 0 and sum(report["moved_to_rank"].values()) == moved
    plain = semantic_ids(df, tiny_blob, config=nearest_cfg(candidates=8, max_bucket_size=10_000))
    assert plain.collisions["moved"] == 0
    plain.unpersist()


def test_append_keeps_published_ids_and_the_manifest_reports_the_moves(spark, tiny_blob, nearest_cfg, tmp_path):
    from semid_udf.table.publish import run_assign

    from .spark_helpers import table_rows, write_input

    x = clustered(500, 16, seed=122, centers=10)
    vec = [list(map(float, v)) for v in x]
    wh = str(tmp_path / "wh")
    day1 = write_input(tmp_path / "d1", list(range(300)), vec[:300])
    first = run_assign(spark, nearest_cfg(), tiny_blob, table="col.ids", input_path=str(day1), warehouse=wh)
    before = table_rows(spark, "col.ids", first.model_version).set_index("item_id")
    day2 = write_input(tmp_path / "d2", list(range(500)), vec)
    second = run_assign(spark, nearest_cfg(), tiny_blob, table="col.ids", input_path=str(day2), warehouse=wh,
                        mode="append")
    after = table_rows(spark, "col.ids", first.model_version).set_index("item_id")
    assert after.loc[before.index].equals(before)  # published IDs never move
    sizes = after.groupby(["sid_0", "sid_1", "sid_2"]).size()
    assert sizes.max() <= 3 and after.semantic_id.is_unique and len(after) == 500
    for res in (first, second):
        done = spark.table("col.ids_manifest").where(f"run_id = '{res.run_id}' AND status = 'complete'").first()
        report = json.loads(done["details"])["collisions"]
        assert report["mode"] == "nearest_free" and report["cap"] == 3 and report["moved"] > 0
        assert report["extra_distance_max"] >= report["extra_distance_mean"] > 0


def test_a_plugin_model_cannot_resolve_by_meaning(spark, tiny_blob, nearest_cfg, tmp_path):
    from semid_udf import semantic_ids

    from .spark_helpers import write_input

    import dataclasses

    x = clustered(20, 16, seed=123)
    inp = write_input(tmp_path / "in", list(range(20)), [list(map(float, v)) for v in x])
    cfg = nearest_cfg()
    plug = dataclasses.replace(cfg, plugin=dataclasses.replace(cfg.plugin, factory="tests.faults:controlled",
                                                               layout="batch_major"))
    with pytest.raises(ConfigError, match="nearest_free: needs semid's own RQ-VAE"):  # on the driver, first
        semantic_ids(str(inp), tiny_blob, config=plug, spark=spark)
