"""Checkpoints: a directory with ``config.json`` and ``model.safetensors``.

The checkpoint carries its own model configuration, so inference needs nothing else.
Weights are read with safetensors only (it never executes code, unlike ``torch.load`` of a
pickle); the file's sha256 recorded in ``config.json`` is checked before anything is built.
The model version is derived from the model configuration and the tensors, so the same
weights always give the same version, whatever the training metadata or file timestamps.
No pyspark import here.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from semid_udf.config import ModelConfig
from semid_udf.errors import CheckpointError
from semid_udf.paths import local_path

if TYPE_CHECKING:
    from semid_udf.model.coder import ResidualCoder

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def version_of(model_cfg: dict[str, Any], tensors: dict[str, torch.Tensor],
               plugin: dict[str, Any] | None = None) -> str:
    """First 12 hex digits of a sha256 over the model config, every tensor's bytes and, for a
    user's model, its plugin section (factory, method, layout, output): the same weights run
    by another factory, method or output are another model."""
    h = hashlib.sha256()
    h.update(json.dumps(model_cfg, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    if plugin:  # absent for semid's own checkpoints, whose versions stay what they were
        h.update(b"plugin|" + json.dumps(plugin, sort_keys=True, separators=(",", ":")).encode())
    return h.hexdigest()[:12]


def model_config_from_dict(d: dict[str, Any]) -> ModelConfig:
    valid = {f.name for f in fields(ModelConfig)}
    unknown = set(d) - valid
    if unknown:
        raise CheckpointError(f"config.json model section has unknown keys {sorted(unknown)}; valid: {sorted(valid)}")
    d = dict(d)
    d.setdefault("beam", 1)  # checkpoints written before model.beam existed encode greedily
    if "hidden_dims" in d:
        d["hidden_dims"] = tuple(d["hidden_dims"])
    cfg = ModelConfig(**d)
    cfg.validate()
    return cfg


@dataclass(frozen=True)
class CheckpointBlob:
    """Everything inference needs, as plain data: small enough to broadcast."""

    config: dict[str, Any]  # the parsed config.json
    weights: bytes  # the safetensors file's bytes

    @property
    def model_version(self) -> str:
        return self.config["model_version"]

    @property
    def model(self) -> dict[str, Any]:
        return self.config["model"]

    def tensors(self) -> dict[str, torch.Tensor]:
        return st_load(self.weights)


def save_checkpoint(
    model: torch.nn.Module,
    model_cfg: ModelConfig | dict[str, Any],
    directory: str | Path,
    training: dict[str, Any] | None = None,
    model_version: str | None = None,
) -> str:
    """Write ``config.json`` + ``model.safetensors``; return the model version."""
    mcfg = model_cfg if isinstance(model_cfg, dict) else _model_dict(model_cfg)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return save_tensors_checkpoint(tensors, mcfg, directory, training=training, model_version=model_version)


def save_tensors_checkpoint(
    tensors: dict[str, torch.Tensor],
    model_dict: dict[str, Any],
    directory: str | Path,
    plugin: dict[str, Any] | None = None,
    probe: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    model_version: str | None = None,
) -> str:
    """Write a checkpoint from plain tensors; return the model version.

    ``plugin`` (factory, method, layout, output) makes it a checkpoint of a user's own model,
    run through that factory; it is part of the derived version. ``probe`` holds the
    figures of semid-import's stability probe (not part of the version).
    """
    local = local_path(directory)
    if local is None:
        raise CheckpointError(f"checkpoint {directory}: semid writes a checkpoint to a local or mounted folder; "
                              "write it there and copy the folder to its final location")
    directory = Path(local)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    derived = version_of(model_dict, tensors, plugin)
    weights = st_save(tensors, metadata={"format_version": str(FORMAT_VERSION)})
    config: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "model": model_dict,
        "model_version": model_version or derived,
        "model_version_source": "explicit" if model_version else "derived",
        "derived_version": derived,
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "training": training or {},
    }
    if plugin:
        config["plugin"] = plugin
    if probe is not None:
        config["probe"] = probe
    # Weights first, config last: a directory without config.json is not a checkpoint.
    (directory / WEIGHTS_FILE).write_bytes(weights)
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
    log.info("checkpoint %s written to %s", config["model_version"], directory)
    return config["model_version"]


# Model keys added after the first checkpoints, with the value every earlier checkpoint
# implies. They are written only when they differ from it, so an RQ-VAE's config.json, and
# the model version derived from it, are what they were before these keys existed.
LATER_KEYS = {"kind": "rqvae", "normalize": False}


def _model_dict(cfg: ModelConfig) -> dict[str, Any]:
    out = {f.name: (list(v) if isinstance(v := getattr(cfg, f.name), tuple) else v) for f in fields(cfg)}
    if cfg.kind == "rqkmeans":  # no network: say so rather than record widths nothing uses
        out.update(hidden_dims=[], latent_dim=cfg.input_dim)
    return {k: v for k, v in out.items() if not (k in LATER_KEYS and v == LATER_KEYS[k])}


def _files(directory: str | os.PathLike[str]) -> tuple[Any, str, str]:
    """(pyarrow file system, path on it, the name to show) of a local path or a URI."""
    import pyarrow.fs as pafs

    text = str(directory)
    local = local_path(text)
    if local is None:
        try:
            fs, path = pafs.FileSystem.from_uri(text)
        except Exception as e:  # an unknown scheme or missing credentials: say which
            raise CheckpointError(f"checkpoint {text}: cannot open this location ({str(e).splitlines()[0]})") from None
        return fs, path.rstrip("/"), text.rstrip("/")
    return pafs.LocalFileSystem(), local, text.rstrip("/")


def read_checkpoint(directory: str | os.PathLike[str]) -> CheckpointBlob:
    """Read and verify a checkpoint directory (a local path or any URI pyarrow opens:
    s3://, gs://, hdfs://, abfs://, file://) without building a model (driver side)."""
    import pyarrow.fs as pafs

    fs, root, shown = _files(directory)
    info = fs.get_file_info(root)
    if info.type != pafs.FileType.Directory:
        what = "a file" if info.type == pafs.FileType.File else "missing"
        raise CheckpointError(f"checkpoint {shown}: expected a directory with {CONFIG_FILE} and {WEIGHTS_FILE}, "
                              f"got {what}")
    cfg_path, w_path = f"{shown}/{CONFIG_FILE}", f"{shown}/{WEIGHTS_FILE}"
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if fs.get_file_info(f"{root}/{name}").type != pafs.FileType.File:
            found = sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(root)))
            raise CheckpointError(f"checkpoint {shown}: {name} missing (found: {found})")

    def read(name: str) -> bytes:
        with fs.open_input_stream(f"{root}/{name}") as f:
            return f.read()

    try:
        config = json.loads(read(CONFIG_FILE).decode())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_path}: not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{cfg_path}: expected a JSON object, got {type(config).__name__}")
    for key in ("format_version", "model", "model_version", "weights_sha256"):
        if key not in config:
            raise CheckpointError(f"{cfg_path}: key {key!r} missing")
    if config["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{cfg_path}: format_version expected {FORMAT_VERSION}, got {config['format_version']!r}"
        )
    weights = read(WEIGHTS_FILE)
    check_safetensors_bytes(weights, w_path)
    actual = hashlib.sha256(weights).hexdigest()
    if actual != config["weights_sha256"]:
        raise CheckpointError(
            f"{w_path}: sha256 expected {config['weights_sha256']} (from {CONFIG_FILE}), got {actual}: "
            "weights changed or corrupt"
        )
    blob = CheckpointBlob(config=config, weights=weights)
    try:
        tensors = blob.tensors()
    except Exception as e:  # safetensors' own parse error: name the file, say what it said
        raise CheckpointError(f"{w_path}: not a valid safetensors file: {' '.join(str(e).split())}") from None
    if config.get("model_version_source", "derived") == "derived":
        derived = version_of(config["model"], tensors, config.get("plugin"))
        if derived != config["model_version"]:
            raise CheckpointError(
                f"{cfg_path}: model_version expected {derived} (derived from weights), got {config['model_version']}"
            )
    return blob


def check_safetensors_bytes(data: bytes, where: Any = "weights") -> None:
    """Refuse anything that is not a safetensors file (a pickle, a zip) before parsing it."""
    if len(data) < 10:
        raise CheckpointError(f"{where}: not a safetensors file ({len(data)} bytes)")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > len(data) - 8 or data[8:9] != b"{":
        raise CheckpointError(
            f"{where}: not a safetensors file (starts with {data[:4]!r}; a pickle or zip?): refusing to load it"
        )


def build_model(blob: CheckpointBlob) -> "ResidualCoder":
    """Build semid's model (``model.kind``) from a blob and load its weights strictly."""
    from semid_udf.model.coder import build

    cfg = model_config_from_dict(blob.model)
    model = build(cfg)
    tensors = blob.tensors()
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    shapes = [f"{k}: expected {list(expected[k].shape)}, got {list(tensors[k].shape)}" for k in sorted(expected)
              if k in tensors and tensors[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        raise CheckpointError(f"checkpoint {blob.model_version}: the weights do not fit a model.kind={cfg.kind} model "
                              f"of its config.json: missing {missing}, unexpected {unexpected}, shapes {shapes}")
    model.load_state_dict(tensors, strict=True)
    return model.eval()


def load_checkpoint(directory: str | Path) -> tuple["ResidualCoder", CheckpointBlob]:
    blob = read_checkpoint(directory)
    return build_model(blob), blob


# The public name of a read checkpoint (``semid_udf.read_checkpoint`` returns one).
Checkpoint = CheckpointBlob
