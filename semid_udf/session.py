"""Building the SparkSession for a job, and refusing settings that lose or duplicate data.

The master is never hard-coded: under ``spark-submit`` the launcher's ``--master`` and
``--conf`` win; run directly with no master configured, Spark's default (``local[*]``)
applies. Settings from the YAML ``spark:`` section are applied on the builder.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Mapping

from pyspark.sql import SparkSession

from .errors import UnsafeSettingError

log = logging.getLogger(__name__)

# Settings semid needs for correct writes (see field-notes.md, "Spark writes").
REQUIRED = {
    "spark.sql.sources.partitionOverwriteMode": "dynamic",
}
# semid's defaults, where neither spark-submit nor the config sets them.
DEFAULTS = {
    "spark.ui.showConsoleProgress": "false",
    # The encode step runs in the background while the metastore work runs in another
    # pool; FIFO would queue that work's small jobs behind every encode task.
    "spark.scheduler.mode": "FAIR",
    # The encoded rows (ids, codes, hashes) are cached once for the writes that follow.
    # Compressing the cache made Spark try every scheme on every column (a dictionary
    # HashMap per column batch): the largest JVM cost of the encode step in bench/ profiles,
    # to save a few bytes per row.
    "spark.sql.inMemoryColumnarStorage.compressed": "false",
    # Workers forked with torch already imported (see semid_udf/daemon.py).
    "spark.python.daemon.module": "semid_udf.daemon",
}
# Run directly, the JVM starts here and does a job's worth of work once: its C2 compiler
# spent more CPU seconds than the executor threads (bench/RESULTS.md), on two cores shared
# with the Python workers. C1 alone compiles cheaply; the long-running work is in Python.
DIRECT_RUN_JAVA_OPTIONS = "-XX:TieredStopAtLevel=1"
# value that loses or duplicates data -> why
UNSAFE = {
    "spark.hadoop.mapreduce.fileoutputcommitter.algorithm.version": ("2", "commit algorithm v2 leaves a failed job's files readable"),
    "spark.speculation": ("true", "speculative tasks can write duplicate files"),
    "spark.sql.files.ignoreCorruptFiles": ("true", "it silently drops unreadable files (rows lost)"),
    "spark.sql.files.ignoreMissingFiles": ("true", "it silently drops files that vanish (rows lost)"),
}


def default_driver_memory() -> str:
    """A quarter of this machine's memory, between 1g and 16g."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: keep Spark's own default
        return "1g"
    return f"{max(1, min(16, total // 4 // 2**30))}g"


def launcher_settings() -> dict[str, str]:
    """Settings the spark-submit launcher already gave the JVM (empty when run directly)."""
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # not under spark-submit: no JVM yet
        return {}
    from pyspark import SparkConf, SparkContext

    SparkContext._ensure_initialized()  # connects to the launcher's JVM; starts nothing
    return dict(SparkConf().getAll())


def build_session(app_name: str, conf: Mapping[str, str], warehouse: str | None = None) -> SparkSession:
    """A Hive-enabled session. Precedence: spark-submit ``--conf`` > the config's ``spark:``
    section > semid's defaults for a local warehouse."""
    given = launcher_settings()
    settings = {k: v for k, v in conf.items() if k not in given}
    for k in sorted(set(conf) & set(given)):
        if str(conf[k]) != given[k]:
            log.info("%s: spark-submit gave %s, so the config's %s is not used", k, given[k], conf[k])
    if warehouse:
        wh = str(Path(warehouse).resolve())
        settings.setdefault("spark.sql.warehouse.dir", wh)
        # A local warehouse gets its own embedded Derby metastore, so a later process that
        # names the same warehouse sees the same tables. A configured metastore wins.
        if "spark.hadoop.javax.jdo.option.ConnectionURL" not in given:
            settings.setdefault(
                "spark.hadoop.javax.jdo.option.ConnectionURL",
                f"jdbc:derby:;databaseName={wh}/metastore_db;create=true",
            )
            # Hive's direct-SQL path speeds up partition queries on big shared metastores;
            # setting it up on an embedded Derby was a third of the first metastore call
            # (bench/metastore.py), and semid's tables have few partitions.
            settings.setdefault("spark.hadoop.hive.metastore.try.direct.sql", "false")
        os.environ.setdefault("DERBY_SYSTEM_HOME", wh)
        Path(wh).mkdir(parents=True, exist_ok=True)
    for key, value in DEFAULTS.items():
        if key not in given:
            settings.setdefault(key, value)
    if not given and "spark.driver.memory" not in settings:
        # Run directly, the JVM starts here: size its heap from this machine (local mode runs
        # driver and executor in that one JVM; Spark's default 1g failed on 1M x 768 rows).
        settings["spark.driver.memory"] = default_driver_memory()
    if not given:
        settings.setdefault("spark.driver.extraJavaOptions", DIRECT_RUN_JAVA_OPTIONS)
    builder = SparkSession.builder.appName(app_name)
    for k, v in settings.items():
        builder = builder.config(k, v)
    spark = builder.enableHiveSupport().getOrCreate()
    prepare_session(spark)
    return spark


def prepare_session(spark: SparkSession) -> None:
    """Point local Python workers at this interpreter, set required and refuse unsafe settings."""
    sc = spark.sparkContext
    if "PYSPARK_PYTHON" not in os.environ and sc.master.startswith("local"):
        # Local workers run on this machine: use the interpreter that has semid installed.
        os.environ["PYSPARK_PYTHON"] = sys.executable
        sc.pythonExec = sys.executable
    for k, v in REQUIRED.items():
        spark.conf.set(k, v)
    check_safe_settings(spark)


def check_safe_settings(spark: SparkSession) -> None:
    conf = dict(spark.sparkContext.getConf().getAll())
    hconf = spark.sparkContext._jsc.hadoopConfiguration()
    for key, (bad, why) in UNSAFE.items():
        value = conf.get(key)
        if value is None and not key.startswith("spark.hadoop."):
            value = spark.conf.get(key, None)
        if key.startswith("spark.hadoop.") and value is None:
            value = hconf.get(key[len("spark.hadoop."):])
        if value is not None and str(value).strip().lower() == bad:
            raise UnsafeSettingError(f"{key}: expected not {bad}, got {value}: refusing to run because {why}")
