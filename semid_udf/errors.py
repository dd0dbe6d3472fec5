"""The exceptions semid raises: one base class, one subclass per kind of failure.

Every message names what was expected and what was found, so a failed job's one-line
reason on stderr is enough to act on. :func:`one_line` says the same of anyone else's
error (Spark's, Java's, a Python worker's). No pyspark import here.
"""
import re


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


_PY_ERROR = re.compile(r"^\s*((?:[\w.]+\.)?\w*(?:Error|Exception|Exit)): (.+)$", re.M)


def one_line(e: BaseException) -> str:
    """One line that says why ``e`` happened: for a failed Spark call, the error raised in the
    Python worker or the Java exception's own message (and its cause), never Py4J's "An error
    occurred while calling o123.parquet"."""
    java = getattr(e, "java_exception", None)
    text = str(e)
    if java is not None:
        try:
            parts: list[str] = []
            j = java
            while j is not None and len(parts) < 8:
                parts.append(str(j.toString()))
                j = j.getCause()
            text = "\n".join(parts)
        except Exception:  # py4j gone (killed JVM): the text we have is the best we can say
            text = str(e)
    worker = [m for m in _PY_ERROR.findall(text) if not m[0].startswith(("org.", "java.", "py4j."))]
    if worker:  # the last Python error in a worker traceback is the cause
        name, msg = worker[-1]
        return f"{name.rsplit('.', 1)[-1]}: {msg.strip()}"
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip() and not ln.strip().startswith("at ")]
    first = f"{type(e).__name__}: {lines[0] if lines else ''}"
    if java is not None and len(lines) > 1 and lines[-1] not in lines[0]:  # the innermost names the root cause
        return f"{first} (caused by {lines[-1]})"
    return first
