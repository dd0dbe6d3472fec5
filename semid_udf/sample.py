"""A bounded, deterministic training sample of an embedding table, taken to the driver.

Rows are chosen by a hash of the item id (not by position), so the same table gives the
same sample whatever its partitioning; the driver never holds more than about
``sample_size`` vectors, so a 100M-row table trains without being collected.
"""
from __future__ import annotations

import logging

import numpy as np
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from .errors import InputError

log = logging.getLogger(__name__)


def embedding_dim(df: DataFrame) -> int:
    row = df.where(F.col("embedding").isNotNull()).select(F.size("embedding").alias("d")).first()
    if row is None:
        raise InputError("column 'embedding': expected at least one non-null vector to learn the input dimension, got none")
    return int(row["d"])


def take_sample(df: DataFrame, dim: int, sample_size: int, seed: int) -> np.ndarray:
    """Up to ``sample_size`` valid (right length, finite, no nulls) vectors as float32 [n, dim]."""
    total = df.count()
    if total == 0:
        raise InputError("input: expected at least 1 row to train on, got 0")
    frac = min(1.0, 1.05 * sample_size / total)
    whole = F.col("item_id").isNotNull() & F.col("embedding").isNotNull() & (F.size("embedding") == dim)
    key = F.xxhash64(F.col("item_id").cast("string"), F.lit(seed)).bitwiseAND(F.lit(0x7FFFFFFFFFFFFFFF)).cast("double") / F.lit(2.0 ** 63)
    finite = ~F.exists("embedding", lambda x: x.isNull() | F.isnan(x) | (F.abs(x) == F.lit(float("inf"))))
    picked = (df.select("item_id", "embedding", key.alias("_key"))
              .where(F.col("_key") < frac)
              .where(whole & finite)
              .limit(int(sample_size * 1.2) + 1000))  # a hard bound on what reaches the driver
    table = picked.toArrow()
    n = table.num_rows
    if n == 0:
        raise InputError(f"input: no valid rows of dimension {dim} to train on among {total}")
    order = pc.sort_indices(table, sort_keys=[("_key", "ascending"), ("item_id", "ascending")])
    table = table.take(order).slice(0, sample_size)
    values = table.column("embedding").combine_chunks().flatten()
    x = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(table.num_rows, dim)
    log.info("training sample: %d of %d rows (fraction %.4f)", len(x), total, frac)
    return x
