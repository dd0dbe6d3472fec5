"""The format adapter on every layout, container and dtype, and every way to fail."""
import random

import numpy as np
import pytest
import torch

from semid_udf.model.adapter import detect_layout, select_output, to_code_matrix
from semid_udf.errors import AdapterError, AmbiguousLayoutError, CodeValueError

B, L, K = 6, 4, 256
CODES = np.arange(B * L, dtype=np.int64).reshape(B, L) * 7 % K  # [B, L]


def containers(mat: np.ndarray):
    """The same matrix as numpy, torch and nested Python lists."""
    return {"numpy": mat, "torch": torch.from_numpy(np.ascontiguousarray(mat)), "list": mat.tolist()}


def layouts():
    out = {}
    for cname, m in containers(CODES).items():
        out[("batch_major", cname)] = m
    for cname, m in containers(np.ascontiguousarray(CODES.T)).items():
        out[("level_major", cname)] = m
    out[("per_item", "torch")] = list(torch.from_numpy(CODES))  # what the origin's quantizer gave
    out[("per_item", "numpy")] = [row for row in CODES]
    out[("per_level", "torch")] = [torch.from_numpy(np.ascontiguousarray(c)) for c in CODES.T]
    out[("per_level", "numpy")] = [np.ascontiguousarray(c) for c in CODES.T]
    out[("packed", "bytes")] = CODES.astype(np.uint8).tobytes()
    out[("packed", "uint8")] = np.frombuffer(CODES.astype(np.uint8).tobytes(), dtype=np.uint8)
    return out


@pytest.mark.parametrize("key", list(layouts()), ids=lambda k: f"{k[0]}-{k[1]}")
def test_every_layout_declared_and_detected(key):
    layout, _ = key
    x = layouts()[key]
    declared = to_code_matrix(x, batch=B, levels=L, codebook_size=K, layout=layout)
    assert declared.dtype == np.int32 and declared.flags.c_contiguous
    np.testing.assert_array_equal(declared, CODES)
    if not (layout == "packed" and isinstance(x, np.ndarray)):  # a uint8 vector is 1-D: only declared
        assert detect_layout(x, B, L) in (layout, {"per_item": "batch_major", "per_level": "level_major"}.get(layout))
        np.testing.assert_array_equal(to_code_matrix(x, batch=B, levels=L, codebook_size=K), CODES)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64])
def test_integer_dtypes(dtype):
    small = (CODES % 100).astype(dtype)
    np.testing.assert_array_equal(to_code_matrix(small, batch=B, levels=L, codebook_size=K), small.astype(np.int32))


def test_packed_two_byte_codes():
    big = (CODES * 251).astype("<u2")
    out = to_code_matrix(big.tobytes(), batch=B, levels=L, codebook_size=65536, layout="packed")
    np.testing.assert_array_equal(out, big.astype(np.int32))


def test_batch_equal_levels_is_ambiguous_unless_declared():
    sq = np.arange(16).reshape(4, 4)
    for x in (sq, torch.from_numpy(sq), list(torch.from_numpy(sq)), sq.tolist()):
        with pytest.raises(AmbiguousLayoutError, match="declare the layout"):
            to_code_matrix(x, batch=4, levels=4, codebook_size=K)
    np.testing.assert_array_equal(to_code_matrix(sq, batch=4, levels=4, codebook_size=K, layout="batch_major"), sq)
    np.testing.assert_array_equal(to_code_matrix(sq, batch=4, levels=4, codebook_size=K, layout="level_major"), sq.T)
    per_level = list(torch.from_numpy(sq))
    np.testing.assert_array_equal(to_code_matrix(per_level, batch=4, levels=4, codebook_size=K, layout="per_level"), sq.T)


@pytest.mark.parametrize("x, needle", [
    (CODES[:5], "fits no layout: expected [batch=6, levels=4]"),
    (CODES[:, :3], "fits no layout"),
    (CODES.reshape(-1), "got an array of shape [24]"),
    (CODES[None], "got an array of shape [1, 6, 4]"),
    ([row for row in CODES[:5]], "fits no layout"),
    (CODES.astype(np.uint8).tobytes()[:-1], None),  # detected as packed, wrong length
    ([[1, 2, 3, 4]] * 5 + [[1, 2, 3]], "ragged"),
])
def test_wrong_shapes_name_expected_and_actual(x, needle):
    with pytest.raises(AdapterError) as e:
        to_code_matrix(x, batch=B, levels=L, codebook_size=K)
    if needle:
        assert needle in str(e.value)
    else:
        assert "expected 24 bytes" in str(e.value) and "got 23" in str(e.value)


def test_declared_layout_shape_is_checked():
    with pytest.raises(AdapterError, match=r"layout level_major: expected shape \[4, 6\], got \[6, 4\]"):
        to_code_matrix(CODES, batch=B, levels=L, codebook_size=K, layout="level_major")
    with pytest.raises(AdapterError, match="expected one of auto"):
        to_code_matrix(CODES, batch=B, levels=L, codebook_size=K, layout="sideways")


@pytest.mark.parametrize("value, needle", [(256, "got 256"), (-3, "got -3"), (-1, "-1 is a 'no code' marker"),
                                           (10_000, "got 10000")])
def test_out_of_range_codes_name_item_level_and_value(value, needle):
    bad = CODES.copy()
    bad[2, 3] = value
    ids = [f"item{i}" for i in range(B)]
    for x in containers(bad).values():
        with pytest.raises(CodeValueError) as e:
            to_code_matrix(x, batch=B, levels=L, codebook_size=K, item_ids=ids)
        msg = str(e.value)
        assert "item 'item2' (row 2), level 3" in msg and "[0, 256)" in msg and needle in msg


@pytest.mark.parametrize("x", [CODES.astype(np.float32), torch.from_numpy(CODES).float(), CODES.astype(bool),
                               (CODES + 0.5).tolist(), torch.from_numpy(CODES).double().cuda() if torch.cuda.is_available()
                               else torch.from_numpy(CODES).half()])
def test_non_integer_codes_raise(x):
    with pytest.raises(CodeValueError, match="expected integer codes"):
        to_code_matrix(x, batch=B, levels=L, codebook_size=K)


def test_select_output():
    assert select_output((1, 2, "codes"), "2") == "codes"
    assert select_output({"sem_ids": 5}, "sem_ids") == 5
    with pytest.raises(AdapterError, match="keys: \\['a'\\]"):
        select_output({"a": 1}, "b")
    with pytest.raises(AdapterError, match="out of range"):
        select_output((1,), "3")


def test_no_random_numbers_on_any_failure_path(monkeypatch):
    """The origin filled unknown layouts with random IDs: make every generator explode."""
    def boom(*a, **k):
        raise AssertionError("a random generator was called")

    for mod, names in ((np.random, ["randint", "rand", "randn", "random", "choice", "integers", "default_rng"]),
                       (torch, ["randint", "rand", "randn", "randperm", "randint_like", "rand_like"]),
                       (random, ["randint", "random", "choice", "randrange"])):
        for n in names:
            if hasattr(mod, n):
                monkeypatch.setattr(mod, n, boom)
    sq = np.arange(16).reshape(4, 4)
    bad = CODES.copy()
    bad[0, 0] = -1
    cases = [(sq, 4, 4), (CODES[:5], B, L), (bad, B, L), (CODES.astype(float), B, L), ("junk", B, L),
             (b"\x00" * 3, B, L), ([np.arange(3)] * 6, B, L)]
    for x, b, lv in cases:
        with pytest.raises(AdapterError):
            to_code_matrix(x, batch=b, levels=lv, codebook_size=K)
