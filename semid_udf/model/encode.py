"""``ndarray float32[n, D] -> ndarray int32[n, levels]``: the pure inference function.

The model always sees batches of exactly ``micro_batch`` rows (the tail is zero-padded and
cut off after), so an item's codes never depend on how Spark sliced the data: batch sizes
1, 3, 7 gave latents that differ in the last bit from batch 4096, which flips near-tie codes.
Float32 at the highest matmul precision (TF32 off); ties go to the lowest code index.
No pyspark import here.
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import socket
import sys
import warnings
from typing import Any, Callable, Sequence, cast

import numpy as np
import torch

from semid_udf.model.adapter import select_output, to_code_matrix
from semid_udf.model.checkpoint import CheckpointBlob, build_model
from semid_udf.config import EncodeConfig, PluginConfig
from semid_udf.errors import CheckpointError, ConfigError, InputError, SemidError

log = logging.getLogger(__name__)

# Arrow buffers are read-only; the model only reads its input, so the warning is noise.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)


def set_numerics(threads: int) -> None:
    """Full fp32 everywhere (TF32 off) and a fixed number of torch threads."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def resolve_device(preference: str, task_gpus: Sequence[str] | None = None) -> torch.device:
    """Task GPU resources -> ``CUDA_VISIBLE_DEVICES`` -> CPU; ``cuda`` fails when there is no GPU."""
    if preference == "cpu":
        return torch.device("cpu")
    if preference not in ("auto", "cuda"):
        raise ConfigError(f"encode.device: expected one of auto, cpu, cuda; got {preference!r}")
    has_cuda = torch.cuda.is_available()
    if task_gpus and has_cuda:
        return torch.device(f"cuda:{int(task_gpus[0])}")
    if os.environ.get("CUDA_VISIBLE_DEVICES", "").strip() not in ("", "-1") and has_cuda:
        return torch.device("cuda:0")
    if preference == "cuda":
        if has_cuda:
            return torch.device("cuda:0")
        raise ConfigError(
            "encode.device: expected a CUDA device, got none (torch.cuda.is_available() is False); "
            "use encode.device=auto or cpu"
        )
    return torch.device("cpu")


SHIP_MODULE_HINT = (
    "every process that runs the model must be able to import it: the driver for semid-import and "
    "semid-report, the Python workers of every executor for semid-assign. Ship it as an installed package "
    "(a wheel pip-installed on the nodes, or inside the packed environment given with --archives), "
    "with spark-submit --py-files FILE.py (or a .zip of the package), or on Spark Connect with "
    "spark.addArtifacts(FILE.py, pyfile=True) before the run"
)


def load_plugin(factory: str) -> Callable[..., Any]:
    module_name, _, attr = factory.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        missing = getattr(e, "name", None)
        if missing and missing != module_name and not module_name.startswith(f"{missing}."):
            what = f"module {module_name!r} was found, but importing it failed on module {missing!r}"
        else:
            what = f"cannot import module {module_name!r}"
        raise ConfigError(
            f"plugin.factory {factory!r}: {what} ({type(e).__name__}: {e}) in {sys.executable} on "
            f"{socket.gethostname()}; {SHIP_MODULE_HINT}"
        ) from None
    if not hasattr(module, attr):
        raise ConfigError(f"plugin.factory: module {module_name!r} has no attribute {attr!r}")
    return getattr(module, attr)


def build_plugin_model(factory: str, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Any:
    """``factory(config, tensors)``: a user's model. Its failure is one line that keeps every
    detail (a state-dict mismatch lists the missing and unexpected keys and the shapes)."""
    build = load_plugin(factory)
    try:
        return build(config, tensors)
    except SemidError:
        raise
    except Exception as e:
        detail = " ".join(str(e).split()) or type(e).__name__
        raise CheckpointError(f"plugin.factory {factory}: building the model from the checkpoint's weights failed: "
                              f"{type(e).__name__}: {detail}") from None


def effective_plugin(blob: CheckpointBlob, plugin: PluginConfig) -> PluginConfig:
    """The plugin a checkpoint runs with: the section its config.json records (semid-import
    writes one) unless the config names a factory; a plugin.* setting that contradicts the
    recorded section is an error, never silently ignored."""
    recorded = blob.config.get("plugin")
    if not recorded:
        return plugin
    names = [f.name for f in dataclasses.fields(PluginConfig)]
    if not isinstance(recorded, dict) or set(recorded) != set(names) or not all(
            isinstance(v, str) for v in recorded.values()):
        raise CheckpointError(
            f"checkpoint {blob.model_version}: config.json plugin section: expected string keys {names}, got {recorded!r}")
    rec = PluginConfig(**recorded)
    try:
        rec.validate()
    except ConfigError as e:
        raise CheckpointError(f"checkpoint {blob.model_version}: config.json plugin section: {e}") from None
    default = PluginConfig()
    conflicts = [f"plugin.{n}: checkpoint {getattr(rec, n)!r}, config {getattr(plugin, n)!r}" for n in names
                 if getattr(plugin, n) != getattr(default, n) and getattr(plugin, n) != getattr(rec, n)]
    if conflicts:
        raise ConfigError(
            f"checkpoint {blob.model_version} records its own plugin section and the config contradicts it "
            f"({'; '.join(conflicts)}); drop those settings to run the checkpoint as imported, or import the "
            "weights again with semid-import for another factory, method, layout or output")
    return rec


class CodeEncoder:
    """A loaded model plus everything needed to turn embeddings into codes."""

    def __init__(self, blob: CheckpointBlob, encode_cfg: EncodeConfig, plugin: PluginConfig,
                 task_gpus: Sequence[str] | None = None):
        plugin = effective_plugin(blob, plugin)  # a checkpoint made by semid-import names its own
        set_numerics(encode_cfg.threads)
        self.device = resolve_device(encode_cfg.device, task_gpus)
        m = blob.model
        self.input_dim, self.levels, self.codebook_size = int(m["input_dim"]), int(m["levels"]), int(m["codebook_size"])
        self.micro_batch = encode_cfg.micro_batch
        if plugin.factory:
            model = build_plugin_model(plugin.factory, blob.config, blob.tensors())
            self.layout, self.output = plugin.layout, plugin.output
            method = plugin.method
        else:
            model = build_model(blob)
            self.layout, self.output, method = "batch_major", "", "encode"
        if hasattr(model, "to"):
            model = model.to(self.device)
        if hasattr(model, "eval"):
            model.eval()
        if not callable(getattr(model, method, None)):
            raise ConfigError(f"plugin.method: the model has no callable {method!r}")
        # semid's own model also says which rows' latents or distances are not finite;
        # a user's model is trusted to return codes only for what it could encode.
        checked = not plugin.factory and callable(getattr(model, "encode_checked", None))
        self.model, self._fn = model, getattr(model, "encode_checked" if checked else method)
        self._checked = checked
        self.model_version = blob.model_version
        self._buf = np.zeros((self.micro_batch, self.input_dim), dtype=np.float32)
        log.info("model %s on %s (micro-batch %d, %d torch threads)", self.model_version, self.device,
                 self.micro_batch, torch.get_num_threads())

    def _check(self, x: np.ndarray, item_ids: Sequence[Any] | None, finite_checked: bool) -> None:
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise InputError(f"embeddings: expected shape [n, {self.input_dim}], got {list(x.shape)}")
        if x.dtype != np.float32:
            raise InputError(f"embeddings: expected float32, got {x.dtype}")
        if not finite_checked:
            finite = np.isfinite(x).all(axis=1)
            if not finite.all():
                row = int(np.argmin(finite))
                who = f"item {item_ids[row]!r}" if item_ids is not None else f"row {row}"
                raise InputError(f"embeddings: {who} has NaN/Inf values; validation must reject it before the model")

    def _chunks(self, x: np.ndarray) -> Any:
        """(start, rows, tensor of exactly micro_batch rows): the tail zero-padded, its codes
        dropped after, so an item's codes never depend on how the rows were sliced."""
        mb = self.micro_batch
        for start in range(0, x.shape[0], mb):
            chunk = x[start:start + mb]
            k = chunk.shape[0]
            if k < mb:
                self._buf[:k] = chunk
                self._buf[k:] = 0.0
                chunk = self._buf
            yield start, k, torch.from_numpy(np.ascontiguousarray(chunk)).to(self.device, non_blocking=True)

    def encode(self, x: np.ndarray, item_ids: Sequence[Any] | None = None, finite_checked: bool = False
               ) -> tuple[np.ndarray, np.ndarray]:
        """``(codes int32[n, levels], ok bool[n])``: ``ok`` is False for rows whose latent or
        quantisation error came out NaN/Inf (their codes are meaningless and must not be
        used). ``finite_checked`` skips the input NaN/Inf pass when the caller just did it."""
        self._check(x, item_ids, finite_checked)
        n = x.shape[0]
        out = np.empty((n, self.levels), dtype=np.int32)
        ok = np.ones(n, dtype=bool)
        with torch.inference_mode():
            for start, k, t in self._chunks(x):
                mb = t.shape[0]
                raw = self._fn(t)
                if self._checked:
                    raw, finite = raw
                    ok[start:start + k] = finite[:k].cpu().numpy()
                else:
                    raw = select_output(raw, self.output)
                ids = None if item_ids is None else cast("Sequence[Any]", _IdWindow(item_ids, start, k))  # only indexed
                codes = to_code_matrix(raw, batch=mb, levels=self.levels, codebook_size=self.codebook_size,
                                       layout=self.layout, item_ids=ids)
                out[start:start + k] = codes[:k]
        return out, ok

    def candidates(self, x: np.ndarray, top: int, item_ids: Sequence[Any] | None = None,
                   finite_checked: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`encode` plus, per row, the ``top`` nearest last-level codes for its own prefix
        (int32 ``[n, top]``, the first is its code) and their squared distances (float32):
        what resolving collisions by meaning chooses from. semid's own model only."""
        if not self._checked:
            raise ConfigError("output.collisions=nearest_free: needs semid's own RQ-VAE, which ranks the candidate "
                              "codes by distance; a plugin model returns codes only (use output.collisions=suffix)")
        self._check(x, item_ids, finite_checked)
        n, top = x.shape[0], min(top, self.codebook_size)
        out = np.empty((n, self.levels), dtype=np.int32)
        ok = np.ones(n, dtype=bool)
        cand = np.empty((n, top), dtype=np.int32)
        dist = np.empty((n, top), dtype=np.float32)
        with torch.inference_mode():
            for start, k, t in self._chunks(x):
                codes, finite, c, d = self.model.encode_candidates(t, top)
                out[start:start + k] = codes[:k].cpu().numpy()
                ok[start:start + k] = finite[:k].cpu().numpy()
                cand[start:start + k] = c[:k].cpu().numpy()
                dist[start:start + k] = d[:k].cpu().numpy()
        return out, ok, cand, dist

    def __call__(self, x: np.ndarray, item_ids: Sequence[Any] | None = None, finite_checked: bool = False
                 ) -> np.ndarray:
        """Codes of ``x``; raises when a row's latent is not finite (use :meth:`encode` to
        get such rows flagged instead)."""
        codes, ok = self.encode(x, item_ids, finite_checked)
        if not ok.all():
            row = int(np.argmin(ok))
            who = f"item {item_ids[row]!r}" if item_ids is not None else f"row {row}"
            raise InputError(f"embeddings: {who}: the model's latent or distance is NaN/Inf (the input overflows "
                             f"the model; largest |value| {float(np.abs(x[row]).max()):.3g})")
        return codes


class _IdWindow:
    """Item ids of one micro-batch, looked up only when an error message needs one."""

    def __init__(self, ids: Sequence[Any], offset: int, valid: int):
        self.ids, self.offset, self.valid = ids, offset, valid

    def __getitem__(self, row: int) -> Any:
        if row >= self.valid:
            return f"<zero padding row {row}>"
        v = self.ids[self.offset + row]
        return v.as_py() if hasattr(v, "as_py") else v


def encode_array(blob: CheckpointBlob, x: np.ndarray, encode_cfg: EncodeConfig | None = None,
                 plugin: PluginConfig | None = None) -> np.ndarray:
    """One-shot convenience: build the encoder and encode ``x``."""
    return CodeEncoder(blob, encode_cfg or EncodeConfig(), plugin or PluginConfig())(x)
