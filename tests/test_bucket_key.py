"""The packed bucket key (one bigint per code tuple) that the table write sorts and groups by."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from semid_udf.errors import ReconcileError
from semid_udf.spark.ids import bins_from_suffix_counts, bucket_shifts
from semid_udf.model.quality import size_bin as _size_bin


def pack(codes: np.ndarray, shifts: list[int]) -> np.ndarray:
    return np.bitwise_or.reduce(codes.astype(np.int64) << np.array(shifts, dtype=np.int64), axis=1)


@pytest.mark.parametrize("levels,k", [(4, 256), (3, 1000), (2, 2), (7, 512), (1, 1)])
def test_key_orders_exactly_as_the_tuple(levels, k):
    shifts = bucket_shifts(levels, k)
    assert shifts is not None
    rng = np.random.default_rng(levels * k)
    codes = rng.integers(0, k, size=(3000, levels))
    codes[:, 0] = np.where(rng.random(3000) < 0.5, k - 1, codes[:, 0])  # the largest codes too
    keys = pack(codes, shifts)
    assert (keys >= 0).all()
    by_key = np.argsort(keys, kind="stable")
    by_tuple = np.lexsort(codes.T[::-1])
    np.testing.assert_array_equal(codes[by_key], codes[by_tuple])  # same order
    assert len(np.unique(keys)) == len({tuple(r) for r in codes})  # same buckets


def test_every_tuple_of_a_small_codebook_gets_its_own_key():
    shifts = bucket_shifts(3, 5)
    codes = np.array(list(itertools.product(range(5), repeat=3)))
    keys = pack(codes, shifts)
    assert len(set(keys.tolist())) == 125 and list(keys) == sorted(keys)


@pytest.mark.parametrize("levels,k", [(8, 512), (4, 2**16 + 1), (64, 2)])
def test_tuples_wider_than_63_bits_are_not_packed(levels, k):
    assert bucket_shifts(levels, k) is None


def test_size_bins_are_powers_of_two():
    assert [_size_bin(s) for s in (1, 2, 3, 4, 5, 8, 9, 1024, 1025)] == [0, 1, 2, 2, 3, 3, 4, 10, 11]


@pytest.mark.parametrize("seed", range(5))
def test_size_bins_from_suffix_counts_match_the_bucket_sizes(seed):
    """The statistics observed while writing (rows with suffix 0, 1, 2, 4, ...) give the same
    histogram as counting every bucket's size."""
    rng = np.random.default_rng(seed)
    sizes = rng.geometric(rng.uniform(0.05, 0.9), size=rng.integers(1, 500))
    suffixes = np.concatenate([np.arange(s) for s in sizes])
    top = _size_bin(len(suffixes))
    at = {m: int((suffixes == m).sum()) for m in [0] + [1 << k for k in range(top + 1)]}
    expected: dict[int, int] = {}
    for s in sizes:
        expected[_size_bin(int(s))] = expected.get(_size_bin(int(s)), 0) + 1
    got = {k: n for k, n in bins_from_suffix_counts(at, top).items() if n}
    assert got == expected


def test_suffix_counts_with_a_gap_are_refused():
    with pytest.raises(ReconcileError, match="without gaps"):
        bins_from_suffix_counts({0: 3, 1: 5, 2: 0, 4: 0}, 2)  # more rows with suffix 1 than buckets
