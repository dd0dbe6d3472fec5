"""The format adapter: whatever an RQ-VAE returns -> ``int32[batch, levels]``.

Layouts (declare one, or let ``auto`` detect it):

============  ======================================================================
batch_major   one matrix ``[batch, levels]`` (row = item)
level_major   one matrix ``[levels, batch]`` (row = codebook level)
per_item      a list/tuple of ``batch`` vectors of length ``levels``
per_level     a list/tuple of ``levels`` vectors of length ``batch``
packed        ``bytes`` (or a uint8 vector) of ``batch * levels`` little-endian unsigned
              codes, item-major, 1 byte each when codebook_size <= 256, 2 when <= 65536,
              else 4
============  ======================================================================

Containers: torch tensors (any device), numpy arrays, Python lists/tuples (nested lists
are matrices). Detection never guesses: when the shape fits two layouts (``batch ==
levels``) it raises :class:`AmbiguousLayoutError` unless the layout is declared. Codes must be
integers in ``[0, codebook_size)``; anything else raises :class:`CodeValueError` naming the
item, the level, the expected range and the actual value. Nothing is ever filled, hashed,
padded or drawn at random. No pyspark import here.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from semid_udf.config import LAYOUTS
from semid_udf.errors import AdapterError, AmbiguousLayoutError, CodeValueError


def _to_numpy(x: Any, what: str) -> np.ndarray:
    """A tensor / array / nested list as a numpy array, without changing its dtype."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, on any device
        if x.is_floating_point() or x.is_complex():
            raise CodeValueError(f"{what}: expected integer codes, got a {x.dtype} tensor")
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, (list, tuple)):
        try:
            arr = np.asarray(x)
        except ValueError as e:  # ragged nested lists
            raise AdapterError(f"{what}: ragged nested sequence, lengths differ ({e})") from None
        if arr.dtype == object:
            raise AdapterError(f"{what}: ragged or mixed nested sequence (numpy made an object array)")
        return arr
    if isinstance(x, (int, np.integer)):
        return np.asarray(x)
    raise AdapterError(f"{what}: expected a tensor, numpy array or list, got {type(x).__name__}")


def _check_int(arr: np.ndarray, what: str) -> None:
    if arr.dtype.kind not in "iu":
        kind = {"f": "floating-point", "b": "boolean", "c": "complex", "O": "object", "U": "string"}.get(
            arr.dtype.kind, arr.dtype.kind
        )
        raise CodeValueError(f"{what}: expected integer codes, got {kind} dtype {arr.dtype}")


def _is_sequence_of_vectors(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and len(x) > 0 and not isinstance(x[0], (int, float, np.number))


def _packed_width(codebook_size: int) -> int:
    return 1 if codebook_size <= 256 else 2 if codebook_size <= 65536 else 4


def _unpack(x: Any, batch: int, levels: int, codebook_size: int) -> np.ndarray:
    if isinstance(x, (bytes, bytearray, memoryview)):
        buf = bytes(x)
    else:
        arr = _to_numpy(x, "packed codes")
        if arr.dtype != np.uint8 or arr.ndim != 1:
            raise AdapterError(f"packed codes: expected bytes or a 1-D uint8 array, got {arr.dtype} of shape {list(arr.shape)}")
        buf = arr.tobytes()
    width = _packed_width(codebook_size)
    expected = batch * levels * width
    if len(buf) != expected:
        raise AdapterError(
            f"packed codes: expected {expected} bytes (batch {batch} x levels {levels} x {width} byte(s)), got {len(buf)}"
        )
    return np.frombuffer(buf, dtype=f"<u{width}").reshape(batch, levels)


def _matrix(arr: np.ndarray, layout: str, batch: int, levels: int) -> np.ndarray:
    """Orient a 2-D array for a declared matrix layout, checking its shape."""
    item_rows = layout in ("batch_major", "per_item")
    want = (batch, levels) if item_rows else (levels, batch)
    if arr.ndim != 2 or arr.shape != want:
        raise AdapterError(f"layout {layout}: expected shape {list(want)}, got {list(arr.shape)}")
    return arr if item_rows else arr.T


def _stack(seq: Sequence[Any], what: str) -> np.ndarray:
    parts = [_to_numpy(v, f"{what}[{i}]") for i, v in enumerate(seq)]
    for i, p in enumerate(parts):
        if p.ndim != 1:
            raise AdapterError(f"{what}[{i}]: expected a 1-D vector, got shape {list(p.shape)}")
        _check_int(p, f"{what}[{i}]")
    lengths = {len(p) for p in parts}
    if len(lengths) > 1:
        raise AdapterError(f"{what}: vectors of different lengths {sorted(lengths)}")
    return np.stack(parts)


def detect_layout(x: Any, batch: int, levels: int) -> str:
    """Name the layout of ``x``; raise when the shape cannot tell layouts apart."""
    if isinstance(x, (bytes, bytearray, memoryview)):
        return "packed"
    if _is_sequence_of_vectors(x) and not isinstance(x[0], (list, tuple)):
        n, m = len(x), len(_to_numpy(x[0], "output[0]").reshape(-1))
        candidates = [name for name, shape in (("per_item", (batch, levels)), ("per_level", (levels, batch))) if (n, m) == shape]
        kind = "list of vectors"
    else:
        arr = _to_numpy(x, "output")
        if arr.ndim != 2:
            raise AdapterError(
                f"output: expected a [batch={batch}, levels={levels}] matrix, a [levels, batch] matrix, "
                f"a list of vectors or packed bytes; got an array of shape {list(arr.shape)}"
            )
        candidates = [n for n, s in (("batch_major", (batch, levels)), ("level_major", (levels, batch))) if arr.shape == s]
        n, m = arr.shape
        kind = "matrix"
    if len(candidates) > 1:
        raise AmbiguousLayoutError(
            f"output: a {kind} of shape [{n}, {m}] fits both {candidates[0]} and {candidates[1]} "
            f"(batch size {batch} == levels {levels}); declare the layout (plugin.layout)"
        )
    if not candidates:
        raise AdapterError(
            f"output: a {kind} of shape [{n}, {m}] fits no layout: expected [batch={batch}, levels={levels}] "
            f"or [levels={levels}, batch={batch}]"
        )
    return candidates[0]


def to_code_matrix(
    x: Any,
    *,
    batch: int,
    levels: int,
    codebook_size: int,
    layout: str = "auto",
    item_ids: Sequence[Any] | None = None,
) -> np.ndarray:
    """Normalise a model's output to a C-contiguous ``int32[batch, levels]`` matrix."""
    if layout == "auto":
        layout = detect_layout(x, batch, levels)
    elif layout not in LAYOUTS:
        raise AdapterError(f"layout: expected one of auto, {', '.join(LAYOUTS)}; got {layout!r}")

    if layout == "packed":
        arr = _unpack(x, batch, levels, codebook_size)
    elif layout in ("per_item", "per_level"):
        if not isinstance(x, (list, tuple)):
            raise AdapterError(f"layout {layout}: expected a list or tuple of vectors, got {type(x).__name__}")
        arr = _matrix(_stack(x, "output"), layout, batch, levels)
    else:
        if isinstance(x, (list, tuple)) and x and not isinstance(x[0], (list, tuple, int, np.integer)):
            arr = _stack(x, "output")  # a list of tensors stacked into the declared matrix
        else:
            arr = _to_numpy(x, "output")
        _check_int(arr, "output")
        arr = _matrix(arr, layout, batch, levels)
    _check_int(arr, "output")
    check_range(arr, codebook_size, item_ids)
    return np.ascontiguousarray(arr, dtype=np.int32)


def check_range(codes: np.ndarray, codebook_size: int, item_ids: Sequence[Any] | None = None) -> None:
    bad = (codes < 0) | (codes >= codebook_size)
    if not bad.any():
        return
    row, level = (int(v) for v in np.argwhere(bad)[0])
    value = int(codes[row, level])
    who = f"item {item_ids[row]!r} (row {row})" if item_ids is not None else f"row {row}"
    hint = " (-1 is a 'no code' marker; semid never publishes it)" if value == -1 else ""
    raise CodeValueError(
        f"{who}, level {level}: expected a code in [0, {codebook_size}), got {value}{hint}; "
        f"{int(bad.sum())} bad code(s) in this batch"
    )


def select_output(raw: Any, selector: str) -> Any:
    """Pick the codes out of a model's tuple/list (by index) or dict (by key) output."""
    if selector == "":
        return raw
    if isinstance(raw, dict):
        if selector not in raw:
            raise AdapterError(f"plugin.output: key {selector!r} not in the model's output; keys: {sorted(map(str, raw))}")
        return raw[selector]
    if isinstance(raw, (list, tuple)) and selector.lstrip("-").isdigit():
        i = int(selector)
        if not -len(raw) <= i < len(raw):
            raise AdapterError(f"plugin.output: index {i} out of range for an output of {len(raw)} elements")
        return raw[i]
    raise AdapterError(f"plugin.output: cannot select {selector!r} from a {type(raw).__name__}")
