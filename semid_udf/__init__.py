"""semid: RQ-VAE semantic IDs for a recommendation catalogue, published as a Parquet table.

The public API (see docs/api.md, "Use it from your own code"):

- :func:`semantic_codes` ``(checkpoint) -> Column -> Column``: the codes of an embedding
  column, as a vectorised Arrow UDF (``select``/``withColumn``, or ``spark.udf.register``
  for SQL);
- :func:`semantic_ids` ``(df, checkpoint) -> (ids, rejects)``: the IDs ``semid-assign``
  publishes, as DataFrames;
- :func:`read_checkpoint` / :class:`Checkpoint`: a checkpoint read and verified once;
- :func:`load_config` / :class:`JobConfig`: the settings every job takes;
- :func:`run_assign`: the whole ``semid-assign`` job;
- the errors, all subclasses of :class:`SemidError`.

Importing ``semid_udf`` imports neither pyspark nor torch; the functions load them when used.
"""
from semid_udf.config import JobConfig, load_config
from semid_udf.errors import (AdapterError, CheckpointError, ConfigError, DiskFullError, InputError, LockError,
                     MetastoreTimeoutError, ReconcileError, SemidError, UnsafeSettingError)

__version__ = "0.2.0"

__all__ = ["semantic_codes", "semantic_ids", "SemanticIds", "run_assign", "Checkpoint", "read_checkpoint",
           "JobConfig", "load_config", "SemidError", "AdapterError", "CheckpointError", "ConfigError", "DiskFullError",
           "InputError",
           "LockError", "MetastoreTimeoutError", "ReconcileError", "UnsafeSettingError", "__version__"]

_LAZY = {"semantic_codes": "spark.api", "semantic_ids": "spark.api", "SemanticIds": "spark.api",
         "run_assign": "table.publish", "Checkpoint": "model.checkpoint", "read_checkpoint": "model.checkpoint"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'semid_udf' has no attribute {name!r}")
