"""What every job shares: common flags, one logging setup, exit codes and one-line errors."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Callable, Sequence, cast

from semid_udf.config import JobConfig, load_config
from semid_udf.errors import MetastoreTimeoutError, SemidError, one_line

log = logging.getLogger("semid")
# The terminal summary is the product of a run: it goes to stdout through its own logger.
summary = logging.getLogger("semid.summary")


def base_parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--config", help="YAML job config (conf/<file>.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config key (repeatable; CLI > YAML > defaults)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    g.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    return p


def add_session(p: argparse.ArgumentParser) -> None:
    p.add_argument("--remote", help="Spark Connect URL (sc://host:port, or local[N] for a local server); "
                                    "default: the SPARK_REMOTE environment variable, else a classic session")


def add_py_files(p: argparse.ArgumentParser) -> None:
    p.add_argument("--py-files", help="comma-separated .py/.zip files a plugin model needs: importable here and "
                                      "shipped to the executors (spark.addArtifacts(..., pyfile=True) on Spark "
                                      "Connect, addPyFile on a classic session)")


def ship_py_files(spark, files: str | None) -> None:
    """Make ``files`` importable in this process (the model is built here first) and on the
    executors."""
    if not files:
        return
    from semid_udf.errors import ConfigError
    from semid_udf.spark.files import is_connect

    for f in [x.strip() for x in files.split(",") if x.strip()]:
        path = Path(f).resolve()
        if not path.is_file():
            raise ConfigError(f"--py-files: expected a .py or .zip file, got {f!r} (not found)")
        sys.path.insert(0, str(path.parent if path.suffix == ".py" else path))
        if is_connect(spark):
            spark.addArtifacts(str(path), pyfile=True)
        else:
            spark.sparkContext.addPyFile(str(path))  # classic sessions only (checked above)
        log.info("shipped %s to the executors", path)


def add_input(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--input", help="Parquet dataset (file or directory) of item ids and embeddings")
    g.add_argument("--input-table", help="metastore table DB.NAME instead of --input")


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    root = logging.getLogger()
    if not any(getattr(h, "_semid", False) for h in root.handlers):
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        h._semid = True  # type: ignore[attr-defined]
        root.addHandler(h)
        out = logging.StreamHandler(sys.stdout)
        out.setFormatter(logging.Formatter("%(message)s"))
        summary.addHandler(out)
        summary.propagate = False
    root.setLevel(logging.WARNING)
    for name in ("semid", "semid_udf"):
        logging.getLogger(name).setLevel(level)
    summary.setLevel(logging.INFO)
    logging.getLogger("py4j").setLevel(logging.WARNING)
    # pyspark logs every failed query as a JSON blob with a Java trace; our one-line error says it.
    logging.getLogger("DataFrameQueryContextLogger").setLevel(logging.DEBUG if verbose else logging.CRITICAL)


def load(args: argparse.Namespace) -> JobConfig:
    return load_config(args.config, args.overrides)


def run_main(prog: str, main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None) -> int:
    """Run ``main``; any failure becomes a non-zero exit and one line on stderr."""
    try:
        return main(argv)
    except MetastoreTimeoutError as e:
        # A call into the metastore or the file system is stuck in its thread: leaving the
        # interpreter normally would wait for it (and for the JVM) forever.
        log.debug("failure", exc_info=True)
        sys.stderr.write(f"{prog}: error: {e}\n")
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(2)
    except SemidError as e:
        log.debug("failure", exc_info=True)
        sys.stderr.write(f"{prog}: error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        return 130
    except Exception as e:  # Spark/Java errors: the informative line of the message, full trace at debug
        log.debug("failure", exc_info=True)
        sys.stderr.write(f"{prog}: error: {one_line(e)}\n")
        return 1


def exit_on_failure(code: int) -> None:
    """Exit with ``code`` when it is non-zero; return normally on success.

    A Databricks ``python_wheel_task`` calls the entry point in a running interpreter and
    marks the run failed on any ``SystemExit``, even ``sys.exit(0)``; a console script
    whose function returns ``None`` exits 0 all the same.
    """
    if code:
        sys.exit(code)


def warehouse_lock(cfg, warehouse: str | None, remote: str | None, run_id: str):
    """The OS lock on a local warehouse whose embedded metastore this process will start
    (one process at a time); a no-op otherwise."""
    import contextlib

    from semid_udf.table.locks import WarehouseLock
    from semid_udf.spark.session import embedded_metastore, remote_url

    if embedded_metastore(cfg.spark, warehouse, remote_url(remote)):
        return WarehouseLock(cast(str, warehouse), run_id, cfg.output.lock_wait_s)  # set: embedded_metastore said so
    return contextlib.nullcontext()
