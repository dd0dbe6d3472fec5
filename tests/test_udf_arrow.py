"""The Arrow function without Spark: same rows out as in, codes equal the pure function."""
import numpy as np
import pyarrow as pa

from semid_udf.config import EncodeConfig, PluginConfig
from semid_udf.encode import CodeEncoder
from semid_udf.udf import embedding_hash, encode_batch

from .conftest import clustered


def batch(ids, vectors):
    return pa.RecordBatch.from_arrays([pa.array(ids, pa.int64()), pa.array(vectors, pa.list_(pa.float32()))],
                                      names=["item_id", "embedding"])


def test_batch_codes_equal_pure_encode_and_flags_bad_rows(tiny_blob):
    enc = CodeEncoder(tiny_blob, EncodeConfig(micro_batch=64), PluginConfig())
    x = clustered(50, 16, seed=2)
    vecs = [list(map(float, v)) for v in x]
    ids = list(range(50))
    ids[1] = None
    vecs[3] = None
    vecs[5] = vecs[5][:9]
    vecs[7] = vecs[7][:5] + [None] + vecs[7][6:]  # a null element
    vecs[9] = [float("nan")] + vecs[9][1:]
    vecs[11] = vecs[11][:15] + [float("inf")]
    out = encode_batch(enc, batch(ids, vecs), "item_id", "embedding")
    assert out.num_rows == 50
    got = out.to_pydict()
    assert got["reason"][1] == "null_item_id" and got["detail"][1] == "item_id is null"
    assert got["reason"][3] == "null_embedding" and got["detail"][3] == "embedding is null"
    assert got["reason"][5] == "wrong_length" and got["detail"][5] == "embedding: expected length 16, got 9"
    assert got["reason"][7] == "null_element" and "first at index 5" in got["detail"][7]
    assert got["reason"][9] == "non_finite" and "first at index 0" in got["detail"][9]
    assert got["reason"][11] == "non_finite" and "first at index 15" in got["detail"][11]
    bad = (1, 3, 5, 7, 9, 11)
    assert [i for i, r in enumerate(got["reason"]) if r is not None] == list(bad)
    good = [i for i in range(50) if i not in bad]
    codes = np.array([[got[f"sid_{j}"][i] for j in range(3)] for i in good])
    np.testing.assert_array_equal(codes, enc(x[good]))
    for i in bad:
        assert got["sid_0"][i] is None and got["embedding_hash"][i] is None


def test_hash_tells_identical_from_different_rows():
    x = clustered(20, 16, seed=4)
    y = x.copy()
    y[5, 3] = np.nextafter(y[5, 3], np.float32(10))  # one ulp apart
    hx, hy = embedding_hash(x), embedding_hash(y)
    assert (hx == embedding_hash(x.copy())).all()
    assert hx[5] != hy[5] and (np.delete(hx, 5) == np.delete(hy, 5)).all()
    assert len(set(hx.tolist())) == 20


def test_a_sliced_batch_gives_the_rows_of_the_whole(tiny_blob):
    enc = CodeEncoder(tiny_blob, EncodeConfig(micro_batch=64), PluginConfig())
    x = clustered(30, 16, seed=6)
    vecs = [list(map(float, v)) for v in x]
    vecs[12] = None
    whole = encode_batch(enc, batch(list(range(30)), vecs), "item_id", "embedding").to_pydict()
    part = encode_batch(enc, batch(list(range(30)), vecs).slice(10, 15), "item_id", "embedding").to_pydict()
    assert part == {k: v[10:25] for k, v in whole.items()}
