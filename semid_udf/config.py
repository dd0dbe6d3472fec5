"""Job configuration: frozen dataclasses, loaded from YAML with ``--set`` overrides.

Precedence is CLI ``--set`` > YAML file > dataclass defaults. Unknown sections or keys and
values of the wrong type are errors that list the valid keys, never silently ignored.
No pyspark import here.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from semid_udf.errors import ConfigError

# The code layouts a plugin model may return (semid_udf.model.adapter); plugin.layout also takes "auto".
LAYOUTS = ("batch_major", "level_major", "per_item", "per_level", "packed")
DEVICES = ("auto", "cpu", "cuda")
MODES = ("full", "append")
COLLISIONS = ("suffix", "nearest_free")
READERS = ("auto", "arrow", "spark")
FETCHERS = ("auto", "pyarrow", "spark")
# The float types a binary embedding column may pack (input.binary_dtype; "" for none).
BINARY_DTYPES = ("float32", "float16", "float64")
DISTANCES = ("l2",)
MODEL_KINDS = ("rqvae", "rqkmeans")
KMEANS_BALANCE = ("none", "last", "all")


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the model. Stored in the checkpoint's config.json."""

    kind: str = "rqvae"  # rqvae: MLP encoder + residual quantiser of its latent + decoder; rqkmeans: residual k-means on the inputs (no network)
    input_dim: int = 0  # 0: taken from the training data
    hidden_dims: tuple[int, ...] = (512, 256, 128)  # encoder layer widths (the decoder mirrors them)
    latent_dim: int = 32  # width of the latent that the codebooks quantise
    levels: int = 4  # codebook levels = codes per semantic ID (before the suffix)
    codebook_size: int = 256  # codes per level; each code is in [0, codebook_size)
    distance: str = "l2"  # distance for the nearest code (only l2)
    beam: int = 2  # encode by beam search of this width (1 = greedy: nearest code per level); part of the model version
    normalize: bool = False  # rqkmeans: L2-normalise each input before quantising it (cosine geometry); part of the model version

    def validate(self) -> None:
        _choice("model.kind", self.kind, MODEL_KINDS)
        _positive(self, "latent_dim", "levels", "codebook_size", "beam")
        if self.normalize and self.kind != "rqkmeans":
            raise ConfigError(f"model.normalize: applies to model.kind=rqkmeans only, got model.kind={self.kind!r} "
                              "(an RQ-VAE learns its own encoder; normalise the embeddings upstream instead)")
        if self.input_dim < 0:
            raise ConfigError(f"model.input_dim: expected >= 0 (0 = from the data), got {self.input_dim}")
        if any(h <= 0 for h in self.hidden_dims):
            raise ConfigError(f"model.hidden_dims: expected positive ints, got {list(self.hidden_dims)}")
        _choice("model.distance", self.distance, DISTANCES)


@dataclass(frozen=True)
class TrainConfig:
    """Fitting the model on a bounded sample collected to the driver."""

    sample_size: int = 200_000  # rows sampled from the input, at most
    epochs: int = 20  # passes over the sample
    batch_size: int = 1024  # training batch rows
    lr: float = 1e-3  # Adam learning rate
    beta: float = 0.25  # commitment weight
    ema_decay: float = 0.99  # codebook EMA update
    kmeans_iters: int = 20  # k-means(++) init of each level on the sample
    dead_code_steps: int = 50  # a code unused for this many steps is re-seeded
    seed: int = 0  # seed for the sample, the init and the shuffling (deterministic for a seed and thread count)
    threads: int = 0  # torch threads on the driver; 0 = torch's default
    balance_last_level: int = 0  # rqvae: Sinkhorn-Knopp iterations that balance the last level's code assignment of each training batch (as LC-Rec); 0 = off (nearest code). Training epochs only: inference stays nearest code / beam
    kmeans_balance: str = "none"  # rqkmeans: balanced (size-capped) clusters on the sample at no level (none), the last level (last) or every level (all). Fitting only: inference stays nearest code / beam
    kmeans_cap: float = 1.0  # rqkmeans with kmeans_balance: a cluster holds at most ceil(kmeans_cap * sample rows / codebook_size) sample rows (1.0 = equal sizes)
    device: str = "auto"  # rqkmeans: where the driver fits (auto: its GPU when it has one, else CPU; cpu; cuda: fail without one). The RQ-VAE fits on the CPU

    def validate(self) -> None:
        _positive(self, "sample_size", "epochs", "batch_size", "kmeans_iters", "dead_code_steps")
        _choice("train.kmeans_balance", self.kmeans_balance, KMEANS_BALANCE)
        _choice("train.device", self.device, DEVICES)
        if not self.kmeans_cap >= 1.0:
            raise ConfigError(f"train.kmeans_cap: expected >= 1.0 (a multiple of rows / codebook_size), got {self.kmeans_cap}")
        if self.balance_last_level < 0:
            raise ConfigError(f"train.balance_last_level: expected >= 0 (Sinkhorn iterations, 0 = off), "
                              f"got {self.balance_last_level}")
        if not (0.0 < self.lr):
            raise ConfigError(f"train.lr: expected > 0, got {self.lr}")
        if not (0.0 <= self.beta):
            raise ConfigError(f"train.beta: expected >= 0, got {self.beta}")
        if not (0.0 < self.ema_decay < 1.0):
            raise ConfigError(f"train.ema_decay: expected in (0, 1), got {self.ema_decay}")
        if self.threads < 0:
            raise ConfigError(f"train.threads: expected >= 0, got {self.threads}")


@dataclass(frozen=True)
class EncodeConfig:
    """Inference: how embeddings become codes on each worker."""

    micro_batch: int = 1024  # fixed model batch; the tail is zero-padded so codes never depend on slicing
    device: str = "auto"  # auto: task GPU -> CUDA_VISIBLE_DEVICES -> CPU; cuda: fail if none
    threads: int = 1  # torch threads per Python worker (oversubscription costs 2-3x)
    progress_s: float = 10.0  # seconds between progress log lines (rows done, items/s, ETA); a terminal gets one updating line

    def validate(self) -> None:
        _positive(self, "micro_batch", "threads")
        if not self.progress_s > 0:
            raise ConfigError(f"encode.progress_s: expected > 0, got {self.progress_s}")
        _choice("encode.device", self.device, DEVICES)


@dataclass(frozen=True)
class PluginConfig:
    """Run a user's own RQ-VAE class instead of semid's, through the same format adapter."""

    factory: str = ""  # "package.module:callable"; called as factory(config, tensors): the checkpoint's parsed config.json (a dict) and its tensors (name -> torch.Tensor); returns the model
    method: str = "encode"  # method called with a float32 tensor [batch, dim]
    layout: str = "auto"  # declared output layout; auto = detect, raising when ambiguous
    output: str = ""  # element of a tuple/list (an index) or dict (a key) holding the codes

    def validate(self) -> None:
        _choice("plugin.layout", self.layout, ("auto", *LAYOUTS))
        if self.factory and ":" not in self.factory:
            raise ConfigError(f"plugin.factory: expected 'module:callable', got {self.factory!r}")


@dataclass(frozen=True)
class InputConfig:
    """Where the item ids and embeddings are in the input table."""

    id_col: str = "item_id"  # item id column (bigint, int or string, not null)
    embedding_col: str = "embedding"  # embedding column of model.input_dim values, or a nested field path such as result.values
    cast_double: bool = True  # accept array<double> by an explicit cast to array<float>
    reader: str = "auto"  # auto: arrow for Parquet paths and plain-Parquet tables, spark for views and other formats; arrow: pyarrow decodes in the tasks; spark: Spark's reader
    fetch: str = "auto"  # who opens the files pyarrow decodes: pyarrow (local and mounted paths; pyarrow's own file systems for other URIs), spark (Spark fetches whole files with its binaryFile source: any URI Spark can read, with its credentials), auto: pyarrow for local and mounted files, spark otherwise
    fetch_max_file_mb: int = 128  # fetch=spark: the largest file a task may fetch whole (its JVM holds it several times over on the heap while handing it to Python); a larger file sends the input to Spark's reader (reader=auto) or fails the run (reader=arrow)
    binary_dtype: str = ""  # a binary embedding column holds packed little-endian floats of this type: float32, float16 or float64
    files_per_trigger: int = 0  # --stream over a folder: new files per micro-batch (0: all new files)
    quarantine: str = ""  # --stream over a folder: move an input file that cannot be read into this folder (a path or URI) and go on without it; empty: stop the stream, naming the file

    def validate(self) -> None:
        _choice("input.reader", self.reader, READERS)
        _choice("input.binary_dtype", self.binary_dtype, ("", *BINARY_DTYPES))
        _choice("input.fetch", self.fetch, FETCHERS)
        if not 1 <= self.fetch_max_file_mb <= 2047:  # Spark's binaryFile reads at most 2 GiB per file
            raise ConfigError(f"input.fetch_max_file_mb: expected 1 to 2047, got {self.fetch_max_file_mb}")
        if self.files_per_trigger < 0:
            raise ConfigError(f"input.files_per_trigger: expected >= 0, got {self.files_per_trigger}")
        if not self.id_col or not self.embedding_col:
            raise ConfigError("input.id_col and input.embedding_col must be non-empty")


@dataclass(frozen=True)
class OutputConfig:
    """The published table and the limits a run must meet."""

    mode: str = "full"  # full: replace this model version's partition; append: only new items
    arrow_batch: int = 8192  # spark.sql.execution.arrow.maxRecordsPerBatch (a multiple of micro_batch wastes nothing)
    files_per_version: int = 0  # output files per model version; 0 = one per 1M rows, at least one per core (>= 100k rows each)
    max_reject_rate: float = 0.05  # fail the run when more rows than this fraction are rejected
    max_bucket_size: int = 0  # items per code tuple; 0 = unlimited (reported in the manifest)
    shards: int = 1  # >1: encode in this many item-id hash shards, each committed to staging, so a rerun resumes
    location: str = ""  # create the tables as external Parquet tables under this URI (Unity Catalog needs one); empty: managed tables
    lock_wait_s: int = 60  # a run waits this long for another run writing the same table (or warehouse) to finish, then fails
    metastore_timeout_s: int = 300  # a metastore or file-system step that takes longer fails the run with an error saying which
    collisions: str = "suffix"  # suffix: 0, 1, 2, ... per code tuple; nearest_free: items beyond max_bucket_size move to their nearest last-level code with room
    candidates: int = 8  # nearest_free: the last-level codes (nearest first, its own included) an item may move to

    def validate(self) -> None:
        _choice("output.mode", self.mode, MODES)
        _positive(self, "arrow_batch", "shards", "metastore_timeout_s")
        if self.lock_wait_s < 0:
            raise ConfigError(f"output.lock_wait_s: expected >= 0, got {self.lock_wait_s}")
        _choice("output.collisions", self.collisions, COLLISIONS)
        if self.collisions == "nearest_free" and self.max_bucket_size <= 0:
            raise ConfigError("output.collisions=nearest_free: expected output.max_bucket_size > 0 (the cap a bucket "
                              f"is resolved to), got {self.max_bucket_size}")
        if self.candidates < 2:
            raise ConfigError(f"output.candidates: expected >= 2 (an item's own code and one more), got {self.candidates}")
        if self.files_per_version < 0 or self.max_bucket_size < 0:
            raise ConfigError("output.files_per_version and output.max_bucket_size must be >= 0")
        if not (0.0 <= self.max_reject_rate <= 1.0):
            raise ConfigError(f"output.max_reject_rate: expected in [0, 1], got {self.max_reject_rate}")


@dataclass(frozen=True)
class JobConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    plugin: PluginConfig = field(default_factory=PluginConfig)
    input: InputConfig = field(default_factory=InputConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    spark: Mapping[str, str] = field(default_factory=dict)  # Spark settings, e.g. spark.driver.memory: 4g

    def validate(self) -> "JobConfig":
        for f in dataclasses.fields(self):
            section = getattr(self, f.name)
            if hasattr(section, "validate"):
                section.validate()
        for key in self.spark:
            if not key.startswith("spark."):
                raise ConfigError(f"spark.{key}: Spark settings must start with 'spark.', got {key!r}")
        return self


def _positive(obj: Any, *names: str) -> None:
    section = type(obj).__name__.replace("Config", "").lower()
    for n in names:
        v = getattr(obj, n)
        if v <= 0:
            raise ConfigError(f"{section}.{n}: expected a positive integer, got {v}")


def _choice(name: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ConfigError(f"{name}: expected one of {', '.join(options)}; got {value!r}")


def _section_names() -> dict[str, Any]:
    hints = typing.get_type_hints(JobConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(JobConfig)}


def _coerce(where: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotated type ``tp``; convert only lossless cases."""
    origin = typing.get_origin(tp)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin is tuple:
        (inner, _) = typing.get_args(tp)
        if isinstance(value, (list, tuple)):
            return tuple(_coerce(f"{where}[{i}]", v, inner) for i, v in enumerate(value))
    elif origin in (Mapping, dict) or tp is Mapping:
        if isinstance(value, Mapping):
            return {str(k): _spark_value(v) for k, v in value.items()}
    else:  # pragma: no cover - guards new field types
        raise ConfigError(f"{where}: unsupported field type {tp}")
    expected = getattr(tp, "__name__", str(tp))
    raise ConfigError(f"{where}: expected {expected}, got {type(value).__name__} {value!r}")


def _spark_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _merge_section(name: str, cls: Any, base: Any, values: Any) -> Any:
    if name == "spark":
        merged = dict(base)
        merged.update(_coerce("spark", values, Mapping))
        return merged
    if not isinstance(values, Mapping):
        raise ConfigError(f"{name}: expected a mapping of keys, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    updates = {}
    for key, value in values.items():
        if key not in valid:
            raise ConfigError(f"unknown key {name}.{key}; valid keys: {', '.join(valid)}")
        updates[key] = _coerce(f"{name}.{key}", value, hints[key])
    return dataclasses.replace(base, **updates)


def merge(cfg: JobConfig, data: Mapping[str, Any]) -> JobConfig:
    """Return ``cfg`` updated with a nested mapping (as read from YAML)."""
    sections = _section_names()
    if not isinstance(data, Mapping):
        raise ConfigError(f"config: expected a mapping of sections, got {type(data).__name__}")
    updates = {}
    for name, values in data.items():
        if name not in sections:
            raise ConfigError(f"unknown section {name!r}; valid sections: {', '.join(sections)}")
        if values is None:
            continue
        updates[name] = _merge_section(name, sections[name], getattr(cfg, name), values)
    return dataclasses.replace(cfg, **updates)


def _field_type(section: str, key: str) -> Any:
    """The annotated type of ``section.key``, or None when there is no such field (the merge
    then raises the usual error that lists the valid keys)."""
    cls = _section_names().get(section)
    if cls is None or not dataclasses.is_dataclass(cls):
        return None
    return typing.get_type_hints(cls).get(key)


def parse_override(text: str) -> dict[str, Any]:
    """``"model.levels=3"`` -> ``{"model": {"levels": 3}}``; the value is parsed as YAML,
    except for a string key, which takes the text as typed (``plugin.output=1`` is ``"1"``,
    ``yes``, ``null`` and ``on`` stay those words)."""
    if "=" not in text:
        raise ConfigError(f"--set expects section.key=value, got {text!r}")
    path, raw = text.split("=", 1)
    if "." not in path:
        raise ConfigError(f"--set expects section.key=value, got {text!r}")
    section, key = path.split(".", 1)
    if _field_type(section, key) is str:
        return {section: {key: raw}}
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {text!r}: value is not valid YAML: {e}") from None
    if section == "spark":
        value = raw  # Spark settings stay strings, exactly as given
    return {section: {key: value}}


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                base: JobConfig | None = None) -> JobConfig:
    """Defaults (or ``base``), then the YAML file (if any), then each ``--set`` override; validated."""
    cfg = base or JobConfig()
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from None
        cfg = merge(cfg, data)
    for o in overrides:
        cfg = merge(cfg, parse_override(o))
    return cfg.validate()


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    out = dataclasses.asdict(cfg)

    def fix(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: fix(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [fix(v) for v in x]
        return x

    return fix(out)


def reference_rows() -> list[tuple[str, str, str]]:
    """(key, default, type) for every config key, for the configuration reference (docs/configuration.md)."""
    rows = []
    base = JobConfig()
    for name, cls in _section_names().items():
        if name == "spark":
            rows.append(("spark.<spark setting>", "{}", "str"))
            continue
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            default = getattr(getattr(base, name), f.name)
            if isinstance(default, tuple):
                default = list(default)
            rows.append((f"{name}.{f.name}", repr(default), getattr(hints[f.name], "__name__", str(hints[f.name]))))
    return rows
