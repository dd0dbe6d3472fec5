"""The one input-type policy: which columns semid reads as item ids and embeddings, how an
embedding column of any accepted type becomes a float32 matrix, and why a row is rejected.
The job's pyarrow reader, Spark's reader (:mod:`semid_udf.spark.inputs`, through the Arrow
type of each Spark type), the Python workers and the UDF (:mod:`semid_udf.worker.arrow`), and
``semid-import``'s sample all use it, so they accept the same inputs and say the same things.

Accepted: item ids of int (8-, 16-, 32-bit), bigint or string; embeddings as
``array<float>``/``array<double>`` (the latter when ``input.cast_double``), Arrow
``fixed_size_list`` and ``list<halffloat>``, Spark ML dense vectors, and binary blobs of packed
floats of a declared ``input.binary_dtype``. A row that cannot be encoded gets one
:class:`Reason`, checked in its order; no code is ever made up for it.
"""
from __future__ import annotations

import enum
from typing import Callable, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from semid_udf.config import BINARY_DTYPES
from semid_udf.errors import InputError


class Reason(str, enum.Enum):
    """Why a row has no semantic ID (the ``reason`` column of the rejects), in the order the
    rows are checked: the input checks, then what the model made of the row, then duplicates."""

    NULL_ITEM_ID = "null_item_id"
    NULL_EMBEDDING = "null_embedding"
    SPARSE_VECTOR = "sparse_vector"
    WRONG_LENGTH = "wrong_length"
    NULL_ELEMENT = "null_element"
    NON_FINITE = "non_finite"  # NaN/Inf in the input
    NON_FINITE_LATENT = "non_finite_latent"  # a finite input the model turned into NaN/Inf
    DUPLICATE_CONFLICT = "duplicate_conflict"  # an item id repeated with another embedding
    DUPLICATE_IDENTICAL = "duplicate_identical"  # a further copy of an item id with the same embedding

    def __str__(self) -> str:
        return self.value


REASONS = tuple(r.value for r in Reason)


def spark_type_name(t: pa.DataType) -> str:
    """An Arrow type in Spark SQL's words, so both readers' errors read the same."""
    names = {pa.int8(): "tinyint", pa.int16(): "smallint", pa.int32(): "int", pa.int64(): "bigint",
             pa.float32(): "float", pa.float64(): "double", pa.string(): "string", pa.large_string(): "string",
             pa.bool_(): "boolean", pa.binary(): "binary"}
    if t in names:
        return names[t]
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return f"array<{spark_type_name(t.value_type)}>"
    return str(t)


def is_vector_struct(t: pa.DataType) -> bool:
    """Spark ML's ``VectorUDT`` as Arrow and Parquet see it: struct<type, size, indices, values>."""
    return pa.types.is_struct(t) and {t.field(i).name for i in range(t.num_fields)} >= {"type", "size", "indices",
                                                                                        "values"}


def is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def is_binary(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)


def id_type(t: pa.DataType, column: str, where: str = "", actual: str | None = None) -> pa.DataType:
    """The item id type an id column of Arrow type ``t`` is read as: ``int32`` (8-, 16- and
    32-bit integers, unsigned 8 and 16), ``int64`` (64-bit, unsigned 32, as Spark reads them) or
    ``string``; anything else is an error naming the column (``where``: appended to it;
    ``actual``: the type's name in the caller's words, Spark SQL's by default)."""
    if pa.types.is_dictionary(t):  # a pandas categorical written to Parquet: Spark reads the values
        t = t.value_type
    if t in (pa.int8(), pa.int16(), pa.int32(), pa.uint8(), pa.uint16()):
        return pa.int32()
    if t in (pa.int64(), pa.uint32()):  # Spark reads unsigned 32-bit as bigint
        return pa.int64()
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return pa.string()
    raise InputError(f"column {column!r}: expected bigint, int or string, got {actual or spark_type_name(t)}{where}")


def embedding_type_error(t: pa.DataType, column: str, binary_dtype: str, cast_double: bool = True,
                         actual: str | None = None) -> str | None:
    """Why an embedding column of Arrow type ``t`` cannot be read (None when it can; ``actual``:
    the type's name in the caller's words, Spark SQL's by default)."""
    if is_vector_struct(t):
        return None
    if is_list(t):
        v = t.value_type
        if pa.types.is_float32(v) or pa.types.is_float16(v):
            return None
        if pa.types.is_float64(v):
            return None if cast_double else (f"column {column!r}: expected array<float>, got array<double> "
                                             "(input.cast_double is false)")
    elif is_binary(t):
        if binary_dtype in BINARY_DTYPES:
            return None
        return (f"column {column!r}: a binary column holds packed floats of a declared type: expected "
                f"input.binary_dtype one of {', '.join(BINARY_DTYPES)}, got {binary_dtype or 'none'}")
    return unsupported_embedding(column, actual or spark_type_name(t))


def unsupported_embedding(column: str, actual: str) -> str:
    return (f"column {column!r}: expected array<float> (or array<double>, array<half>, a Spark ML dense vector, "
            f"or binary with input.binary_dtype), got {actual}")


def nested_field(schema: pa.Schema, path: str) -> pa.DataType | None:
    """The type of column ``path`` (dotted for a field of a struct column), or None."""
    head, *rest = path.split(".")
    if head not in schema.names:
        return None
    t = schema.field(head).type
    for part in rest:
        if not pa.types.is_struct(t) or t.get_field_index(part) < 0:
            return None
        t = t.field(part).type
    return t


def check_schema(schema: pa.Schema, path: str, id_col: str, emb_col: str, cast_double: bool,
                 binary_dtype: str = "") -> pa.DataType:
    """The file's id type (int32, int64 or string), or an error naming file, column, expected, actual."""
    names = schema.names
    for col, what in ((id_col, "the item id"), (emb_col, "the embedding")):
        if nested_field(schema, col) is None:
            raise InputError(f"column {col!r} ({what}) missing; columns found: {sorted(names)} (file {path})")
    id_t, emb_t = cast(pa.DataType, nested_field(schema, id_col)), nested_field(schema, emb_col)  # both present (checked above)
    id_norm = id_type(id_t, id_col, f" (file {path})")
    why = embedding_type_error(emb_t, emb_col, binary_dtype, cast_double)
    if why:
        raise InputError(f"{why} (file {path})")
    return id_norm


def as_mask(a: pa.Array | np.ndarray) -> np.ndarray:
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

    def flag(self, mask: np.ndarray, reason: Reason, detail: Callable[[int], str]) -> None:
        """Reject the rows of ``mask`` that passed every earlier check."""
        new = mask & self.ok
        for i in np.flatnonzero(new):
            self.reasons[i], self.details[i] = reason.value, detail(int(i))
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
    checks.flag(as_mask(emb.is_null()), Reason.NULL_EMBEDDING, lambda i: f"{column} is null")
    if is_vector_struct(t):
        kind = pc.fill_null(pc.struct_field(emb, "type"), 1).to_numpy(zero_copy_only=False)
        size = pc.struct_field(emb, "size")
        checks.flag(kind == 0, Reason.SPARSE_VECTOR,
                    lambda i: f"{column}: expected a dense vector, got a sparse vector of size {size[i].as_py()}")
        emb = pc.struct_field(emb, "values")  # dense vectors keep their values here (list<double>)
        checks.flag(as_mask(emb.is_null()), Reason.NULL_EMBEDDING, lambda i: f"{column} has no values")
        t = emb.type
    if is_binary(t):
        width = np.dtype(binary_dtype).itemsize
        lengths = pc.fill_null(pc.binary_length(emb), dim * width).to_numpy(zero_copy_only=False)
        checks.flag(lengths != dim * width, Reason.WRONG_LENGTH,
                    lambda i: f"{column}: expected {dim * width} bytes ({dim} x {binary_dtype}), got {int(lengths[i])}")
    else:
        lengths = (np.full(len(emb), t.list_size) if pa.types.is_fixed_size_list(t)
                   else pc.fill_null(pc.list_value_length(emb), dim).to_numpy(zero_copy_only=False))
        checks.flag(lengths != dim, Reason.WRONG_LENGTH,
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
            nulls = as_mask(values.is_null()).reshape(len(rows), dim)
            bad = np.zeros(checks.n, dtype=bool)
            bad[rows] = nulls.any(axis=1)
            where = {int(r): j for j, r in enumerate(rows)}
            checks.flag(bad, Reason.NULL_ELEMENT, lambda i: _where(nulls[where[i]], dim, "null"))
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
        checks.flag(mask, Reason.NON_FINITE, lambda i: _where(not_finite[where[i]], dim, "NaN/Inf"))
        keep = keep & ~bad_rows
    if not keep.all():
        rows, mat = rows[keep], mat[keep]
    return rows, np.ascontiguousarray(mat)
