"""One Arrow batch of embeddings -> codes or a reject reason per row (no pyspark import).

Everything that touches vectors in a Spark task is here: turning any common embedding column
into a float32 matrix (``array<float>``/``array<double>``, Arrow ``fixed_size_list`` and
``list<halffloat>``, Spark ML dense vectors, binary blobs of packed floats), the row checks,
the model, and the embedding hash. The Spark side (``mapInArrow`` and ``arrow_udf``, see
:mod:`semid_udf.api`) only moves batches in and out.

Every input row comes out exactly once: good rows with codes, bad rows with their reason,
in this order of checks: ``null_item_id``, ``null_embedding``, ``sparse_vector``,
``wrong_length``, ``null_element``, ``non_finite`` (NaN/Inf in the input), then
``non_finite_latent`` (a finite input that the model turns into NaN/Inf). A row that fails
one check is never encoded, and no code is ever made up for it.

The model reaches the Python workers inside the function that Spark ships (the checkpoint's
bytes travel with it: no ``SparkContext``, so Spark Connect works too) and is built once per
worker process and model version (:func:`encoder_for`), however many tasks and batches use it.
"""
from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from typing import Any, Callable, Iterator, Sequence, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .checkpoint import Checkpoint
from .config import EncodeConfig, PluginConfig
from .encode import CodeEncoder
from .errors import InputError
from .reader import embedding_type_error, is_binary, is_vector_struct, read_unit

log = logging.getLogger(__name__)

REASONS = ("null_item_id", "null_embedding", "sparse_vector", "wrong_length", "null_element", "non_finite",
           "non_finite_latent")

# ---------------------------------------------------------------------------------------
# The model, once per worker process

_ENCODERS: "OrderedDict[tuple, CodeEncoder]" = OrderedDict()
MAX_MODELS = 4  # models kept per worker (a query may use more than one checkpoint)
BUILDS: Counter = Counter()  # models built in this process, by model version (read by tests)


def _task_gpus() -> tuple[str, ...]:
    try:
        from pyspark import TaskContext
    except ImportError:  # pragma: no cover - only outside Spark
        return ()
    ctx = TaskContext.get()
    if ctx is not None and "gpu" in ctx.resources():
        return tuple(ctx.resources()["gpu"].addresses)
    return ()


def encoder_for(ckpt: Checkpoint, encode_cfg: EncodeConfig, plugin: PluginConfig) -> CodeEncoder:
    """This process's encoder for the checkpoint and settings, built on first use."""
    gpus = _task_gpus()
    key = (ckpt.model_version, ckpt.config["weights_sha256"], encode_cfg, plugin, gpus)
    enc = _ENCODERS.get(key)
    if enc is None:
        enc = CodeEncoder(ckpt, encode_cfg, plugin, task_gpus=list(gpus) or None)
        BUILDS[ckpt.model_version] += 1
        _ENCODERS[key] = enc
        while len(_ENCODERS) > MAX_MODELS:
            _ENCODERS.popitem(last=False)
    else:
        _ENCODERS.move_to_end(key)
    return enc


# ---------------------------------------------------------------------------------------
# Embedding columns of any common type -> float32 rows

def _mask(a: pa.Array | np.ndarray) -> np.ndarray:
    if isinstance(a, np.ndarray):
        return a.astype(bool, copy=False)
    return np.asarray(a.to_numpy(zero_copy_only=False), dtype=bool)


def _where(mask: np.ndarray, d: int, what: str) -> str:
    return f"{int(mask.sum())} {what} value(s) of {d}, first at index {int(np.argmax(mask))}"


class RowChecks:
    """Reasons and details of one batch's rows, filled by the checks in order."""

    def __init__(self, n: int):
        self.n = n
        self.ok = np.ones(n, dtype=bool)
        self.reasons: list = [None] * n
        self.details: list = [None] * n

    def flag(self, mask: np.ndarray, reason: str, detail: Callable[[int], str]) -> None:
        """Reject the rows of ``mask`` that passed every earlier check."""
        new = mask & self.ok
        for i in np.flatnonzero(new):
            self.reasons[i], self.details[i] = reason, detail(int(i))
        self.ok &= ~mask


def _binary_rows(arr: pa.Array, width: int) -> np.ndarray:
    """The bytes of a binary array whose rows are all non-null and ``width`` bytes long."""
    bufs = arr.buffers()
    n = len(arr)
    if pa.types.is_fixed_size_binary(arr.type):
        start = arr.offset * width
        return np.frombuffer(bufs[1], dtype=np.uint8, count=n * width, offset=start)
    off_type = np.int64 if pa.types.is_large_binary(arr.type) else np.int32
    offsets = np.frombuffer(bufs[1], dtype=off_type, count=n + 1, offset=arr.offset * np.dtype(off_type).itemsize)
    return np.frombuffer(bufs[2], dtype=np.uint8, count=int(offsets[-1] - offsets[0]), offset=int(offsets[0]))


def embedding_rows(emb: pa.Array | pa.ChunkedArray, dim: int, checks: RowChecks, binary_dtype: str = "",
                   column: str = "embedding") -> tuple[np.ndarray, np.ndarray]:
    """``(rows, matrix)``: the indices of the rows that passed every input check and their
    vectors as C-contiguous float32 ``[len(rows), dim]``. Failed rows are flagged in ``checks``."""
    if isinstance(emb, pa.ChunkedArray):
        emb = emb.combine_chunks()
    t = emb.type
    why = embedding_type_error(t, column, binary_dtype)
    if why:
        raise InputError(why)
    checks.flag(_mask(emb.is_null()), "null_embedding", lambda i: f"{column} is null")
    if is_vector_struct(t):
        kind = pc.fill_null(pc.struct_field(emb, "type"), 1).to_numpy(zero_copy_only=False)
        size = pc.struct_field(emb, "size")
        checks.flag(kind == 0, "sparse_vector",
                    lambda i: f"{column}: expected a dense vector, got a sparse vector of size {size[i].as_py()}")
        emb = pc.struct_field(emb, "values")  # dense vectors keep their values here (list<double>)
        checks.flag(_mask(emb.is_null()), "null_embedding", lambda i: f"{column} has no values")
        t = emb.type
    if is_binary(t):
        width = np.dtype(binary_dtype).itemsize
        lengths = pc.fill_null(pc.binary_length(emb), dim * width).to_numpy(zero_copy_only=False)
        checks.flag(lengths != dim * width, "wrong_length",
                    lambda i: f"{column}: expected {dim * width} bytes ({dim} x {binary_dtype}), got {int(lengths[i])}")
    else:
        lengths = (np.full(len(emb), t.list_size) if pa.types.is_fixed_size_list(t)
                   else pc.fill_null(pc.list_value_length(emb), dim).to_numpy(zero_copy_only=False))
        checks.flag(lengths != dim, "wrong_length",
                    lambda i: f"{column}: expected length {dim}, got {int(lengths[i])}")
    rows = np.flatnonzero(checks.ok)
    if len(rows) == 0:
        return rows, np.zeros((0, dim), dtype=np.float32)
    sub = emb if len(rows) == len(emb) else emb.take(pa.array(rows))
    if is_binary(t):
        raw = _binary_rows(sub, dim * np.dtype(binary_dtype).itemsize)
        mat = raw.view(np.dtype(binary_dtype).newbyteorder("<")).reshape(len(rows), dim)
    else:
        values = sub.flatten()  # rows are non-null and of length dim here, so this is every value
        if len(values) != len(rows) * dim:  # a sliced list array whose offsets do not start at 0
            raise AssertionError(f"flattened {len(values)} values for {len(rows)} rows of {dim}")
        if values.null_count:
            nulls = _mask(values.is_null()).reshape(len(rows), dim)
            bad = np.zeros(checks.n, dtype=bool)
            bad[rows] = nulls.any(axis=1)
            where = {int(r): j for j, r in enumerate(rows)}
            checks.flag(bad, "null_element", lambda i: _where(nulls[where[i]], dim, "null"))
            values = pc.fill_null(values, 0.0)  # only rows already rejected had nulls
        mat = values.to_numpy(zero_copy_only=False).reshape(len(rows), dim)
    if mat.dtype != np.float32:
        with np.errstate(over="ignore"):  # like Spark's cast: a double beyond float32's range becomes Inf
            mat = mat.astype(np.float32)
    keep = checks.ok[rows]
    not_finite = ~np.isfinite(mat)
    bad_rows = not_finite.any(axis=1) & keep
    if bad_rows.any():
        where = {int(r): j for j, r in enumerate(rows)}
        mask = np.zeros(checks.n, dtype=bool)
        mask[rows[bad_rows]] = True
        checks.flag(mask, "non_finite", lambda i: _where(not_finite[where[i]], dim, "NaN/Inf"))
        keep = keep & ~bad_rows
    if not keep.all():
        rows, mat = rows[keep], mat[keep]
    return rows, np.ascontiguousarray(mat)


# ---------------------------------------------------------------------------------------
# Hash of the vector an ID was computed from

# A linear hash of each embedding's bytes, read as 64-bit words: sum(word_i * m_i) mod 2^64
# with fixed odd multipliers m_i. Two rows that differ in one word never collide (m_i is
# odd, so it is invertible mod 2^64); it only tells identical duplicate rows from
# conflicting ones and changed embeddings from unchanged ones. One vectorised pass.
_MULT_SEED = np.uint64(0x9E3779B97F4A7C15)
_MULTS: dict[int, np.ndarray] = {}


def embedding_hash(mat: np.ndarray) -> np.ndarray:
    """A deterministic int64 hash of each row's float32 bytes (same bytes, same hash)."""
    n, d = mat.shape
    words = mat.view(np.uint64) if d % 2 == 0 and mat.flags.c_contiguous else mat.view(np.uint32).astype(np.uint64)
    width = words.shape[1]
    if width not in _MULTS:
        with np.errstate(over="ignore"):
            _MULTS[width] = (np.arange(1, width + 1, dtype=np.uint64) * _MULT_SEED) | np.uint64(1)
    with np.errstate(over="ignore"):
        return (words * _MULTS[width]).sum(axis=1, dtype=np.uint64).view(np.int64)


# ---------------------------------------------------------------------------------------
# Batches

def _codes(enc: CodeEncoder, checks: RowChecks, rows: np.ndarray, mat: np.ndarray, ids: pa.Array | None,
           top: int = 0) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """Codes ``int32[n, levels]`` of the batch (zeros where not coded), the rows coded, and
    with ``top`` > 0 each row's candidate last-level codes and distances (zeros where not coded)."""
    codes = np.zeros((checks.n, enc.levels), dtype=np.int32)
    extra = (np.zeros((checks.n, top), np.int32), np.zeros((checks.n, top), np.float32)) if top else None
    if len(rows) == 0:
        return codes, rows, extra
    sub_ids = None if ids is None else (ids if len(rows) == len(ids) else ids.take(pa.array(rows)))
    if top:
        got, finite, cand, dist = enc.candidates(mat, top, item_ids=sub_ids, finite_checked=True)
        ext = cast("tuple[np.ndarray, np.ndarray]", extra)  # set above: top > 0
        ext[0][rows], ext[1][rows] = cand, dist
    else:
        got, finite = enc.encode(mat, item_ids=sub_ids, finite_checked=True)
    if not finite.all():
        bad = np.zeros(checks.n, dtype=bool)
        bad[rows[~finite]] = True
        where = {int(r): j for j, r in enumerate(rows)}
        checks.flag(bad, "non_finite_latent", lambda i: (
            "the model's latent or quantisation distance is NaN/Inf for this finite input "
            f"(largest |value| {float(np.abs(mat[where[i]]).max()):.3g})"))
    codes[rows] = got
    return codes, rows[finite], extra


def encode_batch(enc: CodeEncoder, ids: pa.Array, emb: pa.Array, *, binary_dtype: str = "",
                 column: str = "embedding", top: int = 0) -> pa.RecordBatch:
    """The coded rows (see :func:`semid_udf.schema.coded`) of one batch: same rows out as in;
    with ``top`` > 0 also each row's candidate last-level codes and their distances."""
    n = len(ids)
    checks = RowChecks(n)
    checks.flag(_mask(ids.is_null()), "null_item_id", lambda i: "item_id is null")
    rows, mat = embedding_rows(emb, enc.input_dim, checks, binary_dtype, column)
    codes, coded, extra = _codes(enc, checks, rows, mat, ids, top)
    hashes = np.zeros(n, dtype=np.int64)
    if len(rows):
        hashes[rows] = embedding_hash(mat)
    invalid = ~checks.ok
    if invalid.any():
        reason_col, detail_col = pa.array(checks.reasons, pa.string()), pa.array(checks.details, pa.string())
    else:
        reason_col = detail_col = pa.nulls(n, pa.string())
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    cols = [ids, reason_col, detail_col, pa.array(hashes, mask=invalid)]
    cols += [pa.array(codes[:, i], mask=invalid) for i in range(enc.levels)]
    names = ["item_id", "reason", "detail", "embedding_hash"] + [f"sid_{i}" for i in range(enc.levels)]
    if extra is not None:
        for values in extra:
            k = values.shape[1]
            offsets = pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32))
            cols.append(pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1)),
                                                 mask=pa.array(invalid) if invalid.any() else None))
        names += ["cand", "cand_dist"]
    out = pa.RecordBatch.from_arrays(cols, names=names)
    if out.num_rows != n:  # mapInArrow does not check this for us
        raise AssertionError(f"encode_batch returned {out.num_rows} rows for {n}")
    return out


def codes_struct(enc: CodeEncoder, emb: pa.Array | pa.ChunkedArray, *, binary_dtype: str = "",
                 column: str = "embedding") -> pa.StructArray:
    """``struct<sid_0..sid_{L-1}: int, reason: string>`` per row: codes and a null reason, or
    null codes and the reason the row cannot be coded."""
    n = len(emb)
    checks = RowChecks(n)
    rows, mat = embedding_rows(emb, enc.input_dim, checks, binary_dtype, column)
    codes, _, _ = _codes(enc, checks, rows, mat, None)
    invalid = ~checks.ok
    arrays = [pa.array(codes[:, i], mask=invalid) for i in range(enc.levels)]
    arrays.append(pa.array(checks.reasons, pa.string()) if invalid.any() else pa.nulls(n, pa.string()))
    return pa.StructArray.from_arrays(arrays, names=[f"sid_{i}" for i in range(enc.levels)] + ["reason"])


# ---------------------------------------------------------------------------------------
# The functions Spark runs

def map_fn(ckpt: Checkpoint, encode_cfg: EncodeConfig, plugin: PluginConfig, binary_dtype: str = "", top: int = 0
           ) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """For ``mapInArrow`` over (item_id, embedding) rows that Spark read."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            enc = encoder_for(ckpt, encode_cfg, plugin)
            yield encode_batch(enc, batch.column(0), batch.column(1), binary_dtype=binary_dtype, top=top)

    return run


def reader_fn(ckpt: Checkpoint, plan: Any, units: Sequence[Any], encode_cfg: EncodeConfig, plugin: PluginConfig,
              batch_size: int, top: int = 0) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """For ``mapInArrow`` over ``spark.range(len(units))``: each task reads its units' row
    groups with pyarrow (see :mod:`semid_udf.reader`) and encodes them."""
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for position in batch.column(0).to_pylist():
                for rows in read_unit(plan, units[position], batch_size):
                    enc = encoder_for(ckpt, encode_cfg, plugin)
                    yield encode_batch(enc, rows.column(0), rows.column(1), binary_dtype=plan.binary_dtype,
                                       column=plan.emb_col, top=top)

    return run


def udf_fn(ckpt: Checkpoint, encode_cfg: EncodeConfig, plugin: PluginConfig, binary_dtype: str = ""
           ) -> Callable[[pa.Array], pa.Array]:
    """For a scalar ``arrow_udf``: an embedding array -> the codes struct array."""

    def codes(emb: pa.Array) -> pa.Array:
        return codes_struct(encoder_for(ckpt, encode_cfg, plugin), emb, binary_dtype=binary_dtype)

    return codes
