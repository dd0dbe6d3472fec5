"""The Arrow layer without Spark: same rows out as in, codes equal the pure function, and
every embedding column type gives the same codes for the same vector."""
import numpy as np
import pyarrow as pa
import pytest

from semid_udf.worker.arrow import codes_struct, embedding_hash, encode_batch
from semid_udf.config import EncodeConfig, PluginConfig
from semid_udf.model.encode import CodeEncoder
from semid_udf.errors import InputError

from .conftest import clustered


@pytest.fixture(scope="module")
def enc(tiny_blob):
    return CodeEncoder(tiny_blob, EncodeConfig(micro_batch=64), PluginConfig())


def run(enc, ids, emb, **kw):
    return encode_batch(enc, pa.array(ids, pa.int64()), emb, **kw).to_pydict()


def test_batch_codes_equal_pure_encode_and_flags_bad_rows(enc):
    x = clustered(50, 16, seed=2)
    vecs = [list(map(float, v)) for v in x]
    ids = list(range(50))
    ids[1] = None
    vecs[3] = None
    vecs[5] = vecs[5][:9]
    vecs[7] = vecs[7][:5] + [None] + vecs[7][6:]  # a null element
    vecs[9] = [float("nan")] + vecs[9][1:]
    vecs[11] = vecs[11][:15] + [float("inf")]
    vecs[13] = [3.0e38] * 16  # finite, but the encoder overflows: no code may come out of it
    got = run(enc, ids, pa.array(vecs, pa.list_(pa.float32())))
    assert len(got["item_id"]) == 50
    assert got["reason"][1] == "null_item_id" and got["detail"][1] == "item_id is null"
    assert got["reason"][3] == "null_embedding" and got["detail"][3] == "embedding is null"
    assert got["reason"][5] == "wrong_length" and got["detail"][5] == "embedding: expected length 16, got 9"
    assert got["reason"][7] == "null_element" and "first at index 5" in got["detail"][7]
    assert got["reason"][9] == "non_finite" and "first at index 0" in got["detail"][9]
    assert got["reason"][11] == "non_finite" and "first at index 15" in got["detail"][11]
    assert got["reason"][13] == "non_finite_latent" and "3e+38" in got["detail"][13]
    bad = (1, 3, 5, 7, 9, 11, 13)
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


def test_a_sliced_batch_gives_the_rows_of_the_whole(enc):
    x = clustered(30, 16, seed=6)
    vecs = [list(map(float, v)) for v in x]
    vecs[12] = None
    emb = pa.array(vecs, pa.list_(pa.float32()))
    ids = pa.array(list(range(30)), pa.int64())
    whole = encode_batch(enc, ids, emb).to_pydict()
    part = encode_batch(enc, ids.slice(10, 15), emb.slice(10, 15)).to_pydict()
    assert part == {k: v[10:25] for k, v in whole.items()}


def vector_struct(rows):
    """Spark ML's VectorUDT as Arrow carries it: struct<type, size, indices, values>."""
    t = pa.struct([("type", pa.int8()), ("size", pa.int32()), ("indices", pa.list_(pa.int32())),
                   ("values", pa.list_(pa.float64()))])
    return pa.array(rows, t)


def typed_columns(x: np.ndarray) -> dict[str, tuple[pa.Array, str]]:
    """The same vectors as every embedding column type semid reads (array, binary dtype)."""
    n, d = x.shape
    lists = [list(map(float, v)) for v in x]
    x16 = x.astype(np.float16)
    return {
        "list<float>": (pa.array(lists, pa.list_(pa.float32())), ""),
        "large_list<float>": (pa.array(lists, pa.large_list(pa.float32())), ""),
        "list<double>": (pa.array(x.astype(np.float64).tolist(), pa.list_(pa.float64())), ""),
        "fixed_size_list<float>": (pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), d), ""),
        "vector (dense)": (vector_struct([{"type": 1, "size": None, "indices": None, "values": v.tolist()}
                                          for v in x.astype(np.float64)]), ""),
        "binary float32": (pa.array([v.astype("<f4").tobytes() for v in x], pa.binary()), "float32"),
        "binary float64": (pa.array([v.astype("<f8").tobytes() for v in x], pa.large_binary()), "float64"),
        "fixed_size_binary float32": (pa.array([v.astype("<f4").tobytes() for v in x], pa.binary(4 * d)), "float32"),
        # half floats hold fewer values: compare them with their own float32 widening
        "list<halffloat>": (pa.array(list(x16), pa.list_(pa.float16())), ""),
        "binary float16": (pa.array([v.astype("<f2").tobytes() for v in x16], pa.binary()), "float16"),
    }


def test_every_embedding_type_gives_the_codes_of_its_float32_values(enc):
    x = clustered(40, 16, seed=9)
    expected = enc(x)
    expected16 = enc(x.astype(np.float16).astype(np.float32))
    for kind, (col, dtype) in typed_columns(x).items():
        got = run(enc, list(range(40)), col, binary_dtype=dtype)
        assert got["reason"] == [None] * 40, kind
        codes = np.array([got[f"sid_{j}"] for j in range(3)]).T
        np.testing.assert_array_equal(codes, expected16 if "16" in kind else expected, err_msg=kind)
        s = codes_struct(enc, col, binary_dtype=dtype)  # the UDF's struct: the same codes, no reason
        np.testing.assert_array_equal(np.array([s.field(f"sid_{j}").to_pylist() for j in range(3)]).T, codes,
                                      err_msg=kind)
        assert s.field("reason").to_pylist() == [None] * 40, kind


def test_sparse_vectors_and_wrong_byte_lengths_are_rejects_with_their_own_reason(enc):
    x = clustered(3, 16, seed=10)
    vec = vector_struct([{"type": 1, "size": None, "indices": None, "values": x[0].astype(float).tolist()},
                         {"type": 0, "size": 16, "indices": [2], "values": [1.5]}, None])
    got = run(enc, [1, 2, 3], vec)
    assert got["reason"] == [None, "sparse_vector", "null_embedding"]
    assert got["detail"][1] == "embedding: expected a dense vector, got a sparse vector of size 16"
    blobs = pa.array([x[0].astype("<f4").tobytes(), x[1].astype("<f4").tobytes()[:-2], None], pa.binary())
    got = run(enc, [1, 2, 3], blobs, binary_dtype="float32")
    assert got["reason"] == [None, "wrong_length", "null_embedding"]
    assert got["detail"][1] == "embedding: expected 64 bytes (16 x float32), got 62"
    s = codes_struct(enc, blobs, binary_dtype="float32")
    assert s.field("reason").to_pylist() == [None, "wrong_length", "null_embedding"]
    assert s.field("sid_0").to_pylist()[1:] == [None, None]


def test_unreadable_types_fail_naming_column_expected_and_actual(enc):
    with pytest.raises(InputError, match="input.binary_dtype one of float32, float16, float64, got none"):
        run(enc, [1], pa.array([b"\0" * 64], pa.binary()))
    with pytest.raises(InputError, match=r"column 'embedding': expected array<float> .* got array<string>"):
        run(enc, [1], pa.array([["a"]], pa.list_(pa.string())))
