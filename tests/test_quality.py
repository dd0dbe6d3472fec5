"""Quality metrics on hand-built code tables, where the right answer is known."""
import json

import numpy as np
import pytest

from semid_udf.model import quality

# 6 items, 2 levels, K = 4. Tuples: (0,1) x2, (0,2), (3,2) x3.
CODES = np.array([[0, 1], [0, 1], [0, 2], [3, 2], [3, 2], [3, 2]])


def test_level_stats_on_a_hand_built_table():
    s = quality.level_stats(CODES, 4)
    assert [x["used"] for x in s] == [2, 2]
    assert [x["utilisation"] for x in s] == [0.5, 0.5]
    assert [x["dead"] for x in s] == [2, 2]
    assert s[0]["perplexity"] == pytest.approx(2.0)  # 3 and 3 items: two equally used codes
    p = np.array([2, 4]) / 6
    assert s[1]["perplexity"] == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    assert s[1]["largest_code_share"] == pytest.approx(4 / 6)


def test_unique_rate_and_buckets_on_a_hand_built_table():
    assert quality.unique_rate(CODES) == pytest.approx(3 / 6)
    b = quality.bucket_stats(CODES)
    assert b["buckets"] == 3 and b["largest_bucket"] == 3
    assert b["items_sharing_an_id"] == 5
    assert b["bucket_size_histogram"] == {"1": 1, "2": 1, "3": 1}
    assert quality.unique_rate(np.arange(10).reshape(5, 2)) == 1.0


def brute_item_bucket_sizes(codes: np.ndarray) -> list[int]:
    """For each item, how many items (itself included) have exactly its code tuple."""
    rows = [tuple(r) for r in codes.tolist()]
    return [sum(other == mine for other in rows) for mine in rows]


@pytest.mark.parametrize("seed", range(12))
def test_item_quantile_and_large_buckets_match_a_brute_force_count(seed):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(1, 400)), int(rng.integers(1, 6))
    codes = rng.integers(0, k, size=(n, 2)) * (rng.random((n, 2)) < 0.8)  # skewed towards code 0: big buckets
    per_item = sorted(brute_item_bucket_sizes(codes))
    b = quality.bucket_stats(codes)
    # p99 over items: the smallest s with at least 99% of the items in buckets of <= s items
    p99 = min(s for s in per_item if sum(v <= s for v in per_item) * 100 >= 99 * n)
    assert b["p99_item_bucket_size"] == p99
    assert sum(v <= b["p99_item_bucket_size"] for v in per_item) >= 0.99 * n
    smaller = [v for v in per_item if v < p99]
    assert len(smaller) < 0.99 * n  # and no smaller size would do
    assert b["items_in_buckets_over_8"] == sum(v > 8 for v in per_item)
    assert b["share_in_buckets_over_8"] == pytest.approx(sum(v > 8 for v in per_item) / n)
    assert b["items_in_buckets_over_8"] <= n and b["p99_item_bucket_size"] <= b["largest_bucket"]
    for q in (0.5, 0.9, 1.0):
        exact = min(s for s in per_item if sum(v <= s for v in per_item) >= q * n - 1e-9)
        assert quality.item_bucket_quantile(quality.bucket_sizes(codes), q) == exact


def test_item_quantile_is_over_items_not_buckets():
    # 100 singletons and one bucket of 50: 99% of buckets hold 1 item, a third of the items are in the 50
    codes = np.concatenate([np.stack([np.arange(100), np.zeros(100, int)], 1), np.full((50, 2), 999)])
    b = quality.bucket_stats(codes)
    assert b["p99_bucket_size"] < 2 and b["p99_item_bucket_size"] == 50
    assert b["items_in_buckets_over_8"] == 50 and b["share_in_buckets_over_8"] == pytest.approx(50 / 150)
    # the quantile is reached without the bucket of 2 only when singletons hold 99% of the items
    assert quality.item_bucket_quantile(np.array([1] * 198 + [2]), 0.99) == 1  # 198 of 200 items: 99%
    assert quality.item_bucket_quantile(np.array([1] * 98 + [2]), 0.99) == 2  # 98 of 100: not enough
    with pytest.raises(ValueError, match="q"):
        quality.item_bucket_quantile(np.array([1, 2]), 0.0)


def test_chance_of_sharing_a_prefix():
    # first code: groups of 3 and 3 -> (3*2 + 3*2) / (6*5) = 0.4; both codes: (2*1 + 3*2) / 30
    assert quality.prefix_share_chance(CODES, 1) == pytest.approx(12 / 30)
    assert quality.prefix_share_chance(CODES, 2) == pytest.approx(8 / 30)


def test_codes_out_of_range_are_refused():
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        quality.level_stats(CODES, 2)


def test_nearest_neighbours_are_exact_and_never_self():
    x = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 1], [-1, 0.05]], dtype=np.float32)
    nn = quality.nearest_neighbours(x, block=2)
    assert nn.tolist() == [1, 0, 3, 2, 2]


def test_coherence_counts_neighbours_sharing_the_prefix():
    # two tight pairs in different directions; codes put each pair under one first code
    x = np.array([[1, 0], [0.99, 0.01], [0, 1], [0.01, 0.99]], dtype=np.float32)
    good = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    bad = np.array([[0, 0], [1, 1], [0, 0], [1, 1]])
    c = quality.coherence(x, good, sample=4)
    assert c["nn_shares_first_1"] == 1.0 and c["nn_shares_first_2"] == 0.0
    assert c["chance_first_1"] == pytest.approx(4 / 12)
    assert c["lift_first_1"] == pytest.approx(3.0)
    assert quality.coherence(x, bad, sample=4)["nn_shares_first_1"] == 0.0


def test_report_of_a_checkpoint_writes_json_and_plots(tiny_checkpoint, tmp_path):
    from semid_udf.model.checkpoint import load_checkpoint
    from semid_udf.model.encode import encode_array

    from .conftest import clustered

    model, blob = load_checkpoint(tiny_checkpoint)
    x = clustered(2000, 16, seed=5)
    codes = encode_array(blob, x)
    rep = quality.checkpoint_report(model, codes, x, nn_sample=500)
    assert rep["items"] == 2000 and len(rep["per_level"]) == 3
    r = rep["reconstruction"]
    assert 0 < r["latent_relative"] < 1 and r["input_mse"] > 0
    # given codes: the model's own give the same errors; moving items to other codes costs error
    assert quality.reconstruction(model, x, codes=codes) == pytest.approx(r, rel=1e-5)
    other = codes.copy()
    other[:, -1] = (other[:, -1] + 1) % 16
    assert quality.reconstruction(model, x, codes=other)["latent_mse"] > r["latent_mse"]
    # coherence on clustered data: neighbours share first codes far above chance
    assert rep["coherence"]["lift_first_1"] > 2
    path = quality.write_json(rep, tmp_path / "report.json")
    assert json.loads(path.read_text())["unique_rate"] == rep["unique_rate"]
    pngs = quality.plot(codes, 16, tmp_path)
    assert [p.name for p in pngs] == ["code_usage.png", "bucket_sizes.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)


def test_collision_similarity_looks_at_items_sharing_an_id():
    x = np.array([[1, 0], [1, 0.01], [0, 1], [1, 1], [-1, 0]], dtype=np.float32)
    codes = np.array([[0, 0], [0, 0], [1, 1], [1, 1], [2, 0]])
    c = quality.collision_similarity(x, codes)
    assert c["colliding_buckets"] == 2
    assert c["share_cosine_ge_0.95"] == 0.5  # items 0 and 1 are near-duplicates; 2 and 3 are not
    assert quality.collision_similarity(x, np.arange(10).reshape(5, 2)) == {"colliding_buckets": 0}
