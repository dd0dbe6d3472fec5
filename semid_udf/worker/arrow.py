"""One Arrow batch of embeddings -> codes or a reject reason per row (no pyspark import).

Everything that touches vectors in a Spark task is here: turning any common embedding column
into a float32 matrix (``array<float>``/``array<double>``, Arrow ``fixed_size_list`` and
``list<halffloat>``, Spark ML dense vectors, binary blobs of packed floats), the row checks,
the model, and the embedding hash. The Spark side (``mapInArrow`` and ``arrow_udf``, see
:mod:`semid_udf.spark.api`) only moves batches in and out.

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

from semid_udf.model.checkpoint import Checkpoint
from semid_udf.config import EncodeConfig, PluginConfig
from semid_udf.model.encode import CodeEncoder
from semid_udf.vectors import Reason, RowChecks, as_mask, embedding_rows
from semid_udf.worker.reader import read_fetched, read_unit

log = logging.getLogger(__name__)

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
        checks.flag(bad, Reason.NON_FINITE_LATENT, lambda i: (
            "the model's latent or quantisation distance is NaN/Inf for this finite input "
            f"(largest |value| {float(np.abs(mat[where[i]]).max()):.3g})"))
    codes[rows] = got
    return codes, rows[finite], extra


def encode_batch(enc: CodeEncoder, ids: pa.Array, emb: pa.Array, *, binary_dtype: str = "",
                 column: str = "embedding", top: int = 0) -> pa.RecordBatch:
    """The coded rows (see :func:`semid_udf.spark.schema.coded`) of one batch: same rows out as in;
    with ``top`` > 0 also each row's candidate last-level codes and their distances."""
    n = len(ids)
    checks = RowChecks(n)
    checks.flag(as_mask(ids.is_null()), Reason.NULL_ITEM_ID, lambda i: "item_id is null")
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
    groups with pyarrow (see :mod:`semid_udf.worker.reader`) and encodes them."""
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for position in batch.column(0).to_pylist():
                for rows in read_unit(plan, units[position], batch_size):
                    enc = encoder_for(ckpt, encode_cfg, plugin)
                    yield encode_batch(enc, rows.column(0), rows.column(1), binary_dtype=plan.binary_dtype,
                                       column=plan.emb_col, top=top)

    return run


def fetched_fn(ckpt: Checkpoint, plan: Any, encode_cfg: EncodeConfig, plugin: PluginConfig, batch_size: int,
               top: int = 0) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """For ``mapInArrow`` over Spark's ``binaryFile`` rows (path, modificationTime, length,
    content): each task decodes the files Spark fetched for it with pyarrow (see
    :func:`semid_udf.worker.reader.read_fetched`) and encodes them."""
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            paths, lengths = batch.column("path").to_pylist(), batch.column("length").to_pylist()
            mtimes = pc.cast(batch.column("modificationTime"), pa.int64()).to_pylist()  # timestamp[us]: microseconds
            contents = batch.column("content")
            for i, path in enumerate(paths):
                for rows in read_fetched(plan, path, lengths[i], mtimes[i], contents[i].as_buffer(), batch_size):
                    enc = encoder_for(ckpt, encode_cfg, plugin)
                    yield encode_batch(enc, rows.column(0), rows.column(1), binary_dtype=plan.binary_dtype,
                                       column=plan.emb_col, top=top)
            del contents, batch  # a file's bytes are not held longer than its rows

    return run


def udf_fn(ckpt: Checkpoint, encode_cfg: EncodeConfig, plugin: PluginConfig, binary_dtype: str = ""
           ) -> Callable[[pa.Array], pa.Array]:
    """For a scalar ``arrow_udf``: an embedding array -> the codes struct array."""

    def codes(emb: pa.Array) -> pa.Array:
        return codes_struct(encoder_for(ckpt, encode_cfg, plugin), emb, binary_dtype=binary_dtype)

    return codes
