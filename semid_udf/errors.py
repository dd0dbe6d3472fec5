"""The exceptions semid raises: one base class, one subclass per kind of failure.

Every message names what was expected and what was found, so a failed job's one-line
reason on stderr is enough to act on.
"""


class SemidError(Exception):
    """Base class of every error semid raises on purpose."""


class ConfigError(SemidError):
    """A config file, a ``--set`` override or a flag is unknown, mistyped or out of range."""


class CheckpointError(SemidError):
    """A checkpoint directory is missing, unsafe (not safetensors), corrupt or inconsistent."""


class AdapterError(SemidError):
    """What a model returned cannot be turned into an ``int[batch, levels]`` code matrix."""


class AmbiguousLayoutError(AdapterError):
    """The shape fits more than one layout (e.g. batch size == levels) and none was declared."""


class CodeValueError(AdapterError):
    """A code is negative, out of ``[0, codebook_size)``, ``-1`` or not an integer."""


class InputError(SemidError):
    """The input table is structurally unusable (missing column, wrong type, unreadable)."""


class UnsafeSettingError(SemidError):
    """A Spark setting or a path would lose, duplicate or overwrite data."""


class ReconcileError(SemidError):
    """Counts of a run do not add up: rows_in != rows_out + rows_rejected."""


class LockError(SemidError):
    """Another run writes the same table version (or uses the same local warehouse)."""


class MetastoreTimeoutError(SemidError):
    """A metastore or file-system step did not finish within ``output.metastore_timeout_s``."""


class DiskFullError(SemidError):
    """The file system of the warehouse or the tables' location is (nearly) full."""
