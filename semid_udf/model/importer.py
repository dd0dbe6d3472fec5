"""semid-import's library: a user's trained RQ-VAE (torch or safetensors weights plus a
factory) -> a semid checkpoint, after a probe that the model's codes are stable.

- Weights: ``.pt``/``.pth``/``.bin`` are read only with ``torch.load(weights_only=True)``,
  which refuses any pickle that needs code to load; such a file is never unpickled.
  ``.safetensors`` files are read as they are. ``key`` picks the state dict out of a
  training checkpoint (``{"model": ..., "optimizer": ...}``).
- The model is built by the user's factory exactly as the run time builds it:
  ``factory(config, tensors)`` with the checkpoint's ``config.json`` content and the tensors
  read back from the very bytes that are stored.
- The probe runs the model on a sample with two batch sizes that differ from each other and
  from the number of levels, twice each, through the same format adapter as the run time.
  Codes that depend on the batch or change between calls, and codes out of range, are
  refused naming the item and the level.
- The checkpoint records the plugin section (factory, method, the resolved layout, output),
  so ``semid-assign --checkpoint`` runs the model without ``--set``; the model version
  covers the plugin section. The probe's figures are stored beside it.

No pyspark import here.
"""
from __future__ import annotations

import hashlib
import logging
import pickle
import re
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from semid_udf.model.adapter import LAYOUTS, detect_layout, select_output, to_code_matrix
from semid_udf.model.checkpoint import FORMAT_VERSION, CheckpointBlob, check_safetensors_bytes, read_checkpoint, save_tensors_checkpoint
from semid_udf.config import EncodeConfig, PluginConfig
from semid_udf.model.encode import CodeEncoder, build_plugin_model, resolve_device, set_numerics
from semid_udf import vectors
from semid_udf.model import quality
from semid_udf.errors import AdapterError, CheckpointError, CodeValueError, ConfigError, InputError

log = logging.getLogger(__name__)

TORCH_SUFFIXES = (".pt", ".pth", ".bin")
SAFETENSORS_SUFFIX = ".safetensors"
PROBE_BATCHES = (1024, 7)  # the large and the small probe batch, unless one equals the number of levels
PROBE_ROWS = 2048  # rows of the default sample
MIN_PROBE_ROWS = 64


# ---------------------------------------------------------------------------------------------
# Weights


def load_weights(path: str | Path, key: str | None = None) -> dict[str, torch.Tensor]:
    """A flat ``{name: tensor}`` state dict from a torch or safetensors file, never unpickling code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights {path}: expected a file, got {'a directory' if path.exists() else 'nothing'}")
    suffix = path.suffix.lower()
    if suffix == SAFETENSORS_SUFFIX:
        data = path.read_bytes()
        check_safetensors_bytes(data, path)
        try:
            obj: Any = st_load(data)
        except SafetensorError as e:
            raise CheckpointError(f"weights {path}: not a readable safetensors file: {e}") from None
    elif suffix in TORCH_SUFFIXES:
        obj = _torch_load(path)
    else:
        raise CheckpointError(
            f"weights {path}: expected a file ending in {', '.join((*TORCH_SUFFIXES, SAFETENSORS_SUFFIX))}, "
            f"got {suffix or 'no suffix'!r}")
    if key is not None:
        obj = _select_key(obj, key, path)
    return _flat_tensors(obj, path, key)


_BLOCKED = re.compile(r"(unsupported GLOBAL [^\s]+|Unsupported [^\n]+|Unsupported global: [^\n]+)", re.I)


def _torch_load(path: Path) -> Any:
    try:
        with warnings.catch_warnings():  # the restricted unpickler warns about pickle protocols; its verdict is what counts
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = _BLOCKED.search(str(e))
        detail = found.group(1).strip().rstrip(".") if found else str(e).strip().splitlines()[0]
        raise CheckpointError(
            f"weights {path}: refused: torch.load(weights_only=True) found content that needs code to load "
            f"({detail}); semid never unpickles such a file. Save the tensors alone where the file is trusted "
            "(torch.save(model.state_dict(), 'model.pt'), or safetensors.torch.save_file)") from None
    except (RuntimeError, EOFError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"weights {path}: not a file torch.load(weights_only=True) can read: {first}") from None


def _select_key(obj: Any, key: str, path: Path) -> Any:
    if not isinstance(obj, dict):
        raise CheckpointError(f"weights {path}: --key {key!r} given, but the file holds a {type(obj).__name__}, not a dict")
    if key not in obj:
        raise CheckpointError(f"weights {path}: key {key!r} not found; keys: {sorted(map(str, obj))}")
    return obj[key]


def _flat_tensors(obj: Any, path: Path, key: str | None) -> dict[str, torch.Tensor]:
    where = f"weights {path}" + (f" [{key!r}]" if key is not None else "")
    if not isinstance(obj, dict):
        raise CheckpointError(f"{where}: expected a dict of tensors (a state dict), got {type(obj).__name__}")
    if not obj:
        raise CheckpointError(f"{where}: expected a dict of tensors (a state dict), got an empty dict")
    bad = {str(k): type(v).__name__ for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))}
    if bad:
        hint = ""
        nested = sorted(k for k, v in obj.items() if isinstance(v, dict))
        if nested:
            hint = f"; a training checkpoint? pick the state dict with --key (entries holding a dict: {nested})"
        shown = dict(list(sorted(bad.items()))[:8])
        raise CheckpointError(
            f"{where}: expected a flat dict of name -> tensor, got {len(bad)} other entries {shown}{hint}")
    # Own contiguous CPU copies: tied weights share storage, which safetensors refuses to save.
    return {k: v.detach().to("cpu").clone().contiguous() for k, v in obj.items()}


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Samples


@dataclass(frozen=True)
class Sample:
    """Embeddings the probe runs the model on; ``ids`` is None for a generated sample."""

    x: np.ndarray  # float32 [n, input_dim]
    ids: list[Any] | None
    source: str
    skipped: dict[str, int]  # rows of the file left out, by reason

    def who(self, row: int) -> str:
        return f"item {self.ids[row]!r} (sample row {row})" if self.ids is not None else f"sample row {row}"

    def item_ids(self, start: int, stop: int) -> list[Any]:
        return list(self.ids[start:stop]) if self.ids is not None else list(range(start, stop))


def normal_sample(rows: int, input_dim: int, seed: int = 0) -> Sample:
    """``rows`` seeded standard-normal vectors: a model-agnostic sample when none is given."""
    _check_rows(rows)
    x = np.random.default_rng(seed).standard_normal((rows, input_dim), dtype=np.float32)
    return Sample(x=x, ids=None, source=f"seeded normal sample (seed {seed}, {rows} rows)", skipped={})


def read_sample(path: str | Path, input_dim: int, rows: int = PROBE_ROWS, id_col: str = "item_id",
                embedding_col: str = "embedding", binary_dtype: str = "") -> Sample:
    """The first ``rows`` usable rows of a Parquet file or directory, read with pyarrow.

    The columns are judged and decoded as the job does (:mod:`semid_udf.vectors`: every
    embedding type it accepts); rows it would reject are left out, counted by its reasons
    and logged.
    """
    import pyarrow as pa
    import pyarrow.dataset as ds

    _check_rows(rows)
    try:
        dataset = ds.dataset(str(path), format="parquet")
    except (OSError, pa.ArrowInvalid) as e:
        raise InputError(f"sample {path}: cannot read it as Parquet: {e}") from None
    schema = dataset.schema
    missing = [c for c in (id_col, embedding_col) if c not in schema.names]
    if missing:
        raise InputError(f"sample {path}: column(s) {missing} missing; columns: {schema.names}")
    vectors.id_type(schema.field(id_col).type, id_col, f" (sample {path})")
    why = vectors.embedding_type_error(schema.field(embedding_col).type, embedding_col, binary_dtype)
    if why:
        raise InputError(f"sample {path}: {why}")
    table = dataset.head(rows * 2, columns=[id_col, embedding_col])  # room for rows the job would reject
    ids = table.column(id_col).combine_chunks()
    checks = vectors.RowChecks(len(table))
    checks.flag(vectors.as_mask(ids.is_null()), vectors.Reason.NULL_ITEM_ID, lambda i: f"{id_col} is null")
    kept, x = vectors.embedding_rows(table.column(embedding_col), input_dim, checks, binary_dtype, embedding_col)
    skipped = dict(sorted(Counter(r for r in checks.reasons if r is not None).items()))
    if len(kept) == 0:
        first = next(i for i, r in enumerate(checks.reasons) if r is not None)
        raise InputError(f"sample {path}: no usable row of {len(table)} read (left out by reason: {skipped}); e.g. "
                         f"row {first}: {checks.details[first]}")
    if skipped:
        log.warning("sample %s: left out rows the job would reject: %s", path, skipped)
    x, kept_ids = x[:rows], ids.take(pa.array(kept[:rows])).to_pylist()
    if len(x) < MIN_PROBE_ROWS:
        raise InputError(f"sample {path}: expected at least {MIN_PROBE_ROWS} usable rows, got {len(x)} "
                         f"(left out: {skipped or 'none'})")
    return Sample(x=np.array(x, dtype=np.float32), ids=kept_ids, source=f"{path} (first {len(x)} usable rows)",
                  skipped=skipped)


def _check_rows(rows: int) -> None:
    if rows < MIN_PROBE_ROWS:
        raise ConfigError(f"probe sample rows: expected at least {MIN_PROBE_ROWS}, got {rows}")


# ---------------------------------------------------------------------------------------------
# The probe


@dataclass(frozen=True)
class ProbeResult:
    codes: np.ndarray  # int32 [n, levels]: the model's own codes on the sample (large batches, first call)
    layout: str  # the layout the model's output has (declared, or detected)
    figures: dict[str, Any]  # stored as config.json's "probe" section


def probe_batch_sizes(levels: int, rows: int) -> tuple[int, int]:
    """(large, small): different from each other and from ``levels`` (where a shape fits two layouts)."""
    large = min(PROBE_BATCHES[0], rows)
    if large == levels:
        large -= 1
    small = next(b for b in (PROBE_BATCHES[1], 5, 3, 6, 4, 2) if b not in (levels, large))
    return large, small


def probe(model: Any, plugin: PluginConfig, sample: Sample, levels: int, codebook_size: int,
          device: torch.device | str = "cpu") -> ProbeResult:
    """Run ``model``'s method on ``sample`` in large and small batches, twice each; refuse
    codes that depend on the batch, change between calls, or fall out of range."""
    start_time = time.perf_counter()
    fn = getattr(model, plugin.method, None)
    if not callable(fn):
        public = sorted(n for n in dir(model) if not n.startswith("_") and callable(getattr(model, n, None)))[:30]
        raise ConfigError(f"plugin.method: the model built by {plugin.factory} has no callable {plugin.method!r}; "
                          f"callables: {public}")
    n = len(sample.x)
    large, small = probe_batch_sizes(levels, n)
    state = {"layout": plugin.layout}
    what = f"{plugin.factory} (method {plugin.method})"

    def run(batch: int, call: int) -> np.ndarray:
        out = np.empty((n, levels), dtype=np.int32)
        for start in range(0, n, batch):
            stop = min(start + batch, n)
            k = stop - start
            t = torch.from_numpy(sample.x[start:stop]).to(device)
            where = (f"probe of {what} on {sample.source}, call {call} in batches of {batch} rows, "
                     f"rows {start}..{stop - 1}")
            try:
                raw = select_output(fn(t), plugin.output)
                if state["layout"] == "auto":
                    try:
                        state["layout"] = detect_layout(raw, k, levels)
                    except CodeValueError as e:
                        raise CodeValueError(f"{e} (does --method {plugin.method} return the codes? "
                                             "a latent or a distance is not a code)") from None
                    except AdapterError as e:
                        raise type(e)(f"{e}; declare the layout with --layout ({', '.join(LAYOUTS)})") from None
                codes = to_code_matrix(raw, batch=k, levels=levels, codebook_size=codebook_size,
                                       layout=state["layout"], item_ids=sample.item_ids(start, stop))
            except AdapterError as e:
                raise type(e)(f"{where}: {e}") from None
            out[start:stop] = codes
        return out

    set_numerics(0)  # fp32 at full precision (TF32 off), as the run time computes
    with torch.inference_mode():
        large_1 = run(large, 1)
        small_1 = run(small, 1)
        large_2 = run(large, 2)
        small_2 = run(small, 2)
    for a, b, batch in ((large_1, large_2, large), (small_1, small_2, small)):
        _refuse_difference(a, b, sample, "codes change between calls",
                           f"on the first call and {{b}} on the second (batches of {batch} rows)",
                           "a model must give an item the same codes every time (no state updated by a call, "
                           "no sampling at inference)")
    _refuse_difference(large_1, small_1, sample, "codes depend on the batch",
                       f"in batches of {large} rows and {{b}} in batches of {small} rows",
                       "semid encodes fixed micro-batches that mix items arbitrarily, so such a model would give "
                       "an item other codes in another run; an item's codes must depend on the item alone "
                       "(a codebook re-fitted on each call's batch, e.g. by k-means in the forward pass, "
                       "is the usual cause)")
    return ProbeResult(codes=large_1, layout=state["layout"],
                       figures=_figures(large_1, codebook_size, sample, (large, small), state["layout"],
                                        plugin.layout == "auto", time.perf_counter() - start_time))


def _refuse_difference(a: np.ndarray, b: np.ndarray, sample: Sample, what: str, how: str, why: str) -> None:
    diff = a != b
    rows = diff.any(axis=1)
    if not rows.any():
        return
    row = int(np.argmax(rows))
    level = int(np.argmax(diff[row]))
    raise AdapterError(
        f"probe: {what}: {sample.who(row)}, level {level}: code {int(a[row, level])} "
        + how.format(b=int(b[row, level]))
        + f"; {int(rows.sum())} of {len(a)} items differ on {sample.source}. {why}. Refusing to import")


def _figures(codes: np.ndarray, codebook_size: int, sample: Sample, batches: Sequence[int], layout: str,
             detected: bool, seconds: float) -> dict[str, Any]:
    n, levels = codes.shape
    used = [int(np.unique(codes[:, lv]).size) for lv in range(levels)]
    buckets = quality.bucket_stats(codes)
    return {
        "sample": sample.source,
        "rows": int(n),
        "rows_left_out": dict(sample.skipped),
        "batch_sizes": [int(b) for b in batches],
        "calls_per_batch_size": 2,
        "layout": layout,
        "layout_detected": bool(detected),
        "codes_used_per_level": used,
        "utilisation_per_level": [round(u / codebook_size, 4) for u in used],
        "unique_rate": round(buckets["unique_rate"], 4),
        "largest_bucket": buckets["largest_bucket"],
        "seconds": round(seconds, 3),
    }


# ---------------------------------------------------------------------------------------------
# The import


@dataclass(frozen=True)
class ImportResult:
    model_version: str
    checkpoint: Path
    plugin: dict[str, str]
    probe: dict[str, Any]


def build_user_model(factory: str, config: dict[str, Any], tensors: dict[str, torch.Tensor],
                     device: torch.device | str = "cpu") -> Any:
    """``factory(config, tensors)``, moved to ``device`` and in eval mode, as the run time does."""
    model = build_plugin_model(factory, config, tensors)
    if hasattr(model, "to"):
        model = model.to(device)
    if hasattr(model, "eval"):
        model.eval()
    return model


def import_rqvae(weights: str | Path, factory: str, checkpoint: str | Path, *, input_dim: int, levels: int,
                 codebook_size: int, method: str = "encode", layout: str = "auto", output: str = "",
                 key: str | None = None, sample: Sample | None = None, sample_rows: int = PROBE_ROWS,
                 seed: int = 0, device: str = "cpu", model_version: str | None = None) -> ImportResult:
    """Load ``weights``, build the model with ``factory``, probe it, write a semid checkpoint.

    Nothing is written unless the probe passes and the checkpoint, as ``semid-assign`` will
    run it, gives the probe's codes on the sample.
    """
    for name, value in (("--input-dim", input_dim), ("--levels", levels), ("--codebook-size", codebook_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{name}: expected a positive integer, got {value!r}")
    plugin = PluginConfig(factory=factory, method=method, layout=layout, output=output)
    if not factory:
        raise ConfigError("--factory: expected 'module:callable', got nothing")
    plugin.validate()
    dev = resolve_device(device)

    tensors = load_weights(weights, key)
    stored = st_save(tensors, metadata={"format_version": str(FORMAT_VERSION)})
    tensors = st_load(stored)  # the factory sees exactly the tensors the checkpoint will hold
    model_dict = {"input_dim": input_dim, "levels": levels, "codebook_size": codebook_size}
    plugin_dict = {"factory": factory, "method": method, "layout": layout, "output": output}
    config = {"format_version": FORMAT_VERSION, "model": model_dict, "plugin": dict(plugin_dict)}
    log.info("building the model: %s(config, %d tensors from %s)", factory, len(tensors), weights)
    model = build_user_model(factory, config, tensors, dev)

    sample = sample if sample is not None else normal_sample(sample_rows, input_dim, seed)
    if sample.x.ndim != 2 or sample.x.shape[1] != input_dim or sample.x.dtype != np.float32:
        raise InputError(f"probe sample: expected float32 [rows, {input_dim}] (--input-dim), "
                         f"got {sample.x.dtype} {list(sample.x.shape)}")
    if len(sample.x) < MIN_PROBE_ROWS:
        raise InputError(f"probe sample: expected at least {MIN_PROBE_ROWS} rows, got {len(sample.x)}")
    result = probe(model, plugin, sample, levels, codebook_size, dev)
    plugin_dict["layout"] = result.layout  # the run time needs no detection
    log.info("probe passed: layout %s%s, codes used per level %s of %d, unique rate %.4f on %d rows",
             result.layout, " (detected)" if layout == "auto" else "", result.figures["codes_used_per_level"],
             codebook_size, result.figures["unique_rate"], result.figures["rows"])

    _check_as_run(stored, model_dict, plugin_dict, sample, result.codes, device)
    source = {"weights": str(weights), "weights_sha256": file_sha256(weights), "key": key}
    version = save_tensors_checkpoint(tensors, model_dict, checkpoint, plugin=plugin_dict, probe=result.figures,
                                      training={"imported_from": source}, model_version=model_version)
    read_checkpoint(checkpoint)  # the digest and the version read back as written
    return ImportResult(model_version=version, checkpoint=Path(checkpoint), plugin=plugin_dict, probe=result.figures)


def _check_as_run(weights: bytes, model_dict: dict[str, Any], plugin_dict: dict[str, str], sample: Sample,
                  expected: np.ndarray, device: str) -> None:
    """Encode the sample as semid-assign will (recorded plugin section, fixed zero-padded
    micro-batches) and refuse the import unless it gives the probe's codes."""
    blob = CheckpointBlob(config={"format_version": FORMAT_VERSION, "model": model_dict, "plugin": plugin_dict,
                                  "model_version": "(being imported)"}, weights=weights)
    enc = CodeEncoder(blob, EncodeConfig(device=device, threads=torch.get_num_threads()), PluginConfig())
    got = enc(sample.x, item_ids=sample.ids)
    _refuse_difference(expected, got, sample, "the checkpoint as semid-assign runs it gives other codes",
                       "in the probe and {b} in semid's fixed, zero-padded micro-batches",
                       "the model's codes depend on the rows around an item")
