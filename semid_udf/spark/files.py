"""The few file-system operations the driver needs on the tables' storage: list and delete.

Readers never list directories (they follow the manifest), so these serve only the
clean-up of data that no committed state uses any more. Local and mounted paths (no
scheme, ``file:``) use pyarrow; other schemes use Hadoop's FileSystem through the JVM on a
classic session, or pyarrow where it can open them (Spark Connect clients have no JVM). When
neither can, the clean-up is skipped with one log line naming the path: the files stay, and
no reader sees them.
"""
from __future__ import annotations

import logging
from typing import Any

import pyarrow.fs as pafs

from semid_udf.paths import is_local, uri_path

log = logging.getLogger(__name__)


def is_connect(spark: Any) -> bool:
    """True for a Spark Connect session (no SparkContext, no JVM handles in this process)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


class Files:
    def __init__(self, spark: Any):
        self.spark = spark

    def _pyarrow(self, uri: str) -> tuple[pafs.FileSystem, str] | None:
        if is_local(uri):  # a location Spark or the metastore gave: file: URIs come %-encoded
            return pafs.LocalFileSystem(), uri_path(uri)
        try:
            return pafs.FileSystem.from_uri(uri)
        except Exception as e:  # an unknown scheme or missing credentials: try the JVM next
            log.debug("pyarrow cannot open %s: %s", uri, e)
            return None

    def _hadoop(self, uri: str) -> tuple[Any, Any] | None:
        if is_connect(self.spark):
            return None
        sc = self.spark.sparkContext  # classic sessions only (checked above)
        path = sc._jvm.org.apache.hadoop.fs.Path(uri)
        return path, path.getFileSystem(sc._jsc.hadoopConfiguration())

    def children(self, uri: str) -> list[str] | None:
        """Names in directory ``uri`` ([] when it does not exist); None when it cannot be listed."""
        fs = self._pyarrow(uri)
        if fs is not None:
            handle, path = fs
            info = handle.get_file_info(path)
            if info.type == pafs.FileType.NotFound:
                return []
            return sorted(i.base_name for i in handle.get_file_info(pafs.FileSelector(path)))
        h = self._hadoop(uri)
        if h is not None:
            path, handle = h
            if not handle.exists(path):
                return []
            return sorted(str(s.getPath().getName()) for s in handle.listStatus(path))
        log.info("cannot list %s from this session (no file system access here)", uri)
        return None

    def delete(self, uri: str) -> bool:
        """Delete file or directory ``uri``; False (logged) when this session cannot."""
        fs = self._pyarrow(uri)
        if fs is not None:
            handle, path = fs
            info = handle.get_file_info(path)
            if info.type == pafs.FileType.Directory:
                handle.delete_dir(path)
            elif info.type == pafs.FileType.File:
                handle.delete_file(path)
            return True
        h = self._hadoop(uri)
        if h is not None:
            path, handle = h
            handle.delete(path, True)
            return True
        log.warning("cannot delete %s from this session (no file system access here): its files stay, unread; "
                    "delete them by hand", uri)
        return False
