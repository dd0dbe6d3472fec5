"""Building the SparkSession for a job (classic or Spark Connect), and refusing settings that
lose or duplicate data.

The session kind is chosen the way pyspark chooses: ``--remote URL`` or the ``SPARK_REMOTE``
environment variable give a Spark Connect session (``local[N]`` starts a Connect server in
this process, ``sc://host:port`` connects to one); otherwise a classic Hive-enabled session.
The master is never hard-coded: under ``spark-submit`` the launcher's ``--master`` and
``--conf`` win; run directly with no master configured, Spark's default (``local[*]``)
applies. Settings from the YAML ``spark:`` section are applied on the builder.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Mapping, cast

from pyspark.sql import SparkSession

from semid_udf.errors import UnsafeSettingError
from semid_udf.spark.files import is_connect
from semid_udf.paths import warehouse_path

log = logging.getLogger(__name__)

# semid's defaults, where neither spark-submit nor the config sets them.
DEFAULTS = {
    "spark.ui.showConsoleProgress": "false",  # semid reports progress itself (rows, rate, ETA)
    # The encode step runs in the background while the metastore work runs in another
    # pool; FIFO would queue that work's small jobs behind every encode task.
    "spark.scheduler.mode": "FAIR",
    # The encoded rows (ids, codes, hashes) are cached once for the writes that follow.
    # Compressing the cache made Spark try every scheme on every column (a dictionary
    # HashMap per column batch): the largest JVM cost of the encode step in bench/ profiles,
    # to save a few bytes per row.
    "spark.sql.inMemoryColumnarStorage.compressed": "false",
    # Arrow UDFs (semantic_codes, and the job with Spark's reader) get array<float> columns
    # from the JVM faster with Spark 4.2+'s columnar input off (bench/RESULTS.md, "The UDF's
    # floors"); with it on, an Arrow UDF over an ML vector column read from Parquet also fails
    # (UNSUPPORTED_DATATYPE UDT). A user's --conf or config value wins, as for every default.
    "spark.sql.execution.arrow.pythonUDF.columnarInput.enabled": "false",
    # Workers forked with torch already imported (see semid_udf/daemon.py).
    "spark.python.daemon.module": "semid_udf.daemon",
    # The FAIR pool semid's metastore work runs in (publish.metastore_pool), defined.
    "spark.scheduler.allocation.file": str(Path(__file__).parents[1] / "fairscheduler.xml"),
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


def remote_url(remote: str | None = None) -> str | None:
    """The Spark Connect URL to use: ``--remote``, else ``SPARK_REMOTE``, else None (classic)."""
    return remote or os.environ.get("SPARK_REMOTE") or None


def local_settings(conf: Mapping[str, str], warehouse: str | None, given: Mapping[str, str]) -> dict[str, str]:
    """Settings for a JVM this process starts (classic, or a local Connect server)."""
    settings = {k: v for k, v in conf.items() if k not in given}
    for k in sorted(set(conf) & set(given)):
        if str(conf[k]) != given[k]:
            log.info("%s: spark-submit gave %s, so the config's %s is not used", k, given[k], conf[k])
    if warehouse:
        wh = warehouse_path(warehouse)
        settings.setdefault("spark.sql.warehouse.dir", wh)
        # A local warehouse gets its own embedded Derby metastore, so a later process that
        # names the same warehouse sees the same tables. A configured metastore wins.
        if "spark.hadoop.javax.jdo.option.ConnectionURL" not in given:
            settings.setdefault("spark.hadoop.javax.jdo.option.ConnectionURL",
                                f"jdbc:derby:;databaseName={wh}/metastore_db;create=true")
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
        options = DIRECT_RUN_JAVA_OPTIONS
        if warehouse:  # Derby's log goes beside its database, not into the working directory
            options += f' "-Dderby.system.home={warehouse_path(warehouse)}"'
        settings.setdefault("spark.driver.extraJavaOptions", options)
    return settings


def embedded_metastore(conf: Mapping[str, str], warehouse: str | None, remote: str | None) -> bool:
    """True when this process's run will start the embedded Derby metastore of ``warehouse``."""
    if not warehouse or (remote and not remote.startswith("local")):
        return False
    return "spark.hadoop.javax.jdo.option.ConnectionURL" not in {**launcher_settings(), **conf}


def build_session(app_name: str, conf: Mapping[str, str], warehouse: str | None = None,
                  remote: str | None = None) -> SparkSession:
    """A classic Hive-enabled session, or a Spark Connect one (``remote``/``SPARK_REMOTE``).
    Precedence: spark-submit ``--conf`` > the config's ``spark:`` section > semid's defaults."""
    url = remote_url(remote)
    if url is None:
        settings = local_settings(conf, warehouse, launcher_settings())
        builder = SparkSession.builder.appName(app_name)
        for k, v in settings.items():
            builder = builder.config(k, v)
        spark = builder.enableHiveSupport().getOrCreate()
    else:
        spark = _connect(app_name, url, conf, warehouse)
    prepare_session(spark)
    return spark


def _connect(app_name: str, url: str, conf: Mapping[str, str], warehouse: str | None) -> SparkSession:
    if url.startswith("local"):
        # pyspark starts a Connect server in this process: it takes static settings, and
        # its Python workers run on this machine with this interpreter.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        settings = local_settings(conf, warehouse, {})
        settings.setdefault("spark.sql.catalogImplementation", "hive")
        builder = SparkSession.builder.remote(url).appName(app_name)
        for k, v in settings.items():
            builder = builder.config(k, v)
        return builder.getOrCreate()
    spark = SparkSession.builder.remote(url).getOrCreate()
    for k, v in conf.items():  # a running server takes runtime settings only
        try:
            spark.conf.set(k, v)
        except Exception as e:  # a static setting: the server's own value stays
            log.warning("Spark Connect: %s cannot be set on a running server (%s); the server's value is used", k,
                        str(e).splitlines()[0] if str(e) else type(e).__name__)
    skipped = []
    for k, v in DEFAULTS.items():  # semid's defaults, where the server lets a session set them
        if k in conf:
            continue
        if spark.conf.isModifiable(k):
            spark.conf.set(k, v)
        else:
            skipped.append(k)
    if skipped:
        log.info("Spark Connect: the server's own %s apply (static settings; semid's defaults for them are not "
                 "used)", ", ".join(skipped))
    if warehouse:
        log.info("Spark Connect: the server's metastore holds the tables; --warehouse sets where their folders go")
    return spark


def prepare_session(spark: SparkSession) -> None:
    """Point local Python workers at this interpreter; refuse unsafe settings."""
    if not is_connect(spark):
        sc = spark.sparkContext
        if "PYSPARK_PYTHON" not in os.environ and cast(str, sc.master).startswith("local"):  # a running context has a master
            # Local workers run on this machine: use the interpreter that has semid installed.
            os.environ["PYSPARK_PYTHON"] = sys.executable
            sc.pythonExec = sys.executable
    check_safe_settings(spark)


def check_safe_settings(spark: SparkSession) -> None:
    """Refuse the settings in UNSAFE, from the session's configuration (which includes the
    launcher's and the builder's); on a classic session also from the Hadoop configuration
    files the JVM loaded. A Spark Connect client cannot read the server's Hadoop files: that
    part is skipped there (logged once)."""
    for key, (bad, why) in UNSAFE.items():
        keys = [key, key[len("spark.hadoop."):]] if key.startswith("spark.hadoop.") else [key]
        values = [spark.conf.get(k, None) for k in keys]
        if not is_connect(spark):  # classic sessions only: the launcher's settings and Hadoop's files
            values.append(spark.sparkContext.getConf().get(key, None))
            if key.startswith("spark.hadoop."):
                values.append(spark.sparkContext._jsc.hadoopConfiguration().get(keys[1]))
        for value in values:
            if value is not None and str(value).strip().lower() == bad:
                raise UnsafeSettingError(f"{key}: expected not {bad}, got {value}: refusing to run because {why}")
    if is_connect(spark) and not getattr(check_safe_settings, "_told", False):
        log.info("Spark Connect: the server's Hadoop configuration files cannot be read from here; only its Spark "
                 "settings were checked for %s", ", ".join(UNSAFE))
        check_safe_settings._told = True  # type: ignore[attr-defined]
