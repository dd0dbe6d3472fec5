"""A bounded, deterministic training sample of an embedding table, taken to the driver.

Rows are chosen by a hash of the item id (not by position), so the same table gives the
same sample whatever its partitioning; the driver never holds more than about
``sample_size`` rows, so a 100M-row table trains without being collected. The vectors are
read exactly as the encode step reads them (any embedding column type; rows with a defect
are left out), so training and inference see the same float32 values.
"""
from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from semid_udf.errors import InputError
from semid_udf.vectors import RowChecks, embedding_rows, is_binary, is_vector_struct

log = logging.getLogger(__name__)


def _length(emb: pa.Array, binary_dtype: str) -> int | None:
    """The vector length of the first non-null row of ``emb``."""
    if is_vector_struct(emb.type):
        emb = pc.struct_field(emb, "values")
    valid = emb.drop_null()
    if len(valid) == 0:
        return None
    if is_binary(valid.type):
        return len(valid[0].as_py()) // np.dtype(binary_dtype or "float32").itemsize
    return len(valid[0])


def embedding_dim(df: DataFrame, binary_dtype: str = "") -> int:
    """The length of the first non-null embedding of ``df`` (item_id, embedding)."""
    t = df.where(F.col("embedding").isNotNull()).select("embedding").limit(1).toArrow()
    d = _length(t.column("embedding").combine_chunks(), binary_dtype) if t.num_rows else None
    if not d:
        raise InputError("column 'embedding': expected at least one non-null vector to learn the input dimension, got none")
    return int(d)


def take_sample(df: DataFrame, dim: int, sample_size: int, seed: int, binary_dtype: str = "") -> np.ndarray:
    """Up to ``sample_size`` valid (right length, finite, no nulls) vectors as float32 [n, dim]."""
    total = df.count()
    if total == 0:
        raise InputError("input: expected at least 1 row to train on, got 0")
    frac = min(1.0, 1.05 * sample_size / total)
    key = F.xxhash64(F.col("item_id").cast("string"), F.lit(seed)).bitwiseAND(F.lit(0x7FFFFFFFFFFFFFFF)).cast("double") / F.lit(2.0 ** 63)
    picked = (df.select("item_id", "embedding", key.alias("_key"))
              .where((F.col("_key") < frac) & F.col("item_id").isNotNull() & F.col("embedding").isNotNull())
              .limit(int(sample_size * 1.2) + 1000))  # a hard bound on what reaches the driver
    table = picked.toArrow()
    order = pc.sort_indices(table, sort_keys=[("_key", "ascending"), ("item_id", "ascending")])
    table = table.take(order)
    checks = RowChecks(table.num_rows)
    _, x = embedding_rows(table.column("embedding").combine_chunks(), dim, checks, binary_dtype)
    with np.errstate(over="ignore"):
        fits = np.isfinite(np.square(x).sum(axis=1)) if len(x) else np.zeros(0, dtype=bool)
    if not fits.all():  # finite values whose squares overflow float32 (training's precision) would make NaN distances
        log.warning("training sample: %d rows left out whose squared length overflows", int((~fits).sum()))
        x = x[fits]
    x = x[:sample_size]
    if len(x) == 0:
        raise InputError(f"input: no valid rows of dimension {dim} to train on among {total}")
    log.info("training sample: %d of %d rows (fraction %.4f)", len(x), total, frac)
    return x
