"""Where a location lives: the one rule for every path or URI a user gives semid.

A location is taken as Spark (Hadoop's ``Path``) takes it, so that semid and Spark always
mean the same folder:

- no scheme (``/x``, ``x``, ``/dbfs/x``, ``/Volumes/x``, ``C:\\x``): a path on this machine,
  relative to the working directory when it is relative (mounted volumes are local paths);
- ``file:/x``, ``file:///x``, ``file://localhost/x``: the local path ``/x``;
- any other scheme (``s3://b/x``, ``dbfs:/x``, ``abfss://...``): not on this machine.

The text after the scheme is literal, never %-decoded (Spark reads ``file:/a%41`` as the
folder ``a%41``). URIs that Spark or the metastore hand back (a table's files) are encoded;
:func:`uri_path` decodes those. Names with ``%``, ``#`` or ``?`` are refused for the tables'
own folders before any work (:func:`check_table_location`): Hive and Spark encode them
differently in different places. No pyspark import here.
"""
from __future__ import annotations

import os
import re
from urllib.parse import unquote, urlsplit

from semid_udf.errors import ConfigError

# A scheme has two characters or more, so a Windows drive letter (C:) stays a path.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")
TABLE_PATH_UNSAFE = "%#?"


def scheme(location: str) -> str | None:
    """The location's scheme in lower case (``s3``, ``file``), or None for a plain path."""
    m = _SCHEME.match(location)
    return m.group(1).lower() if m else None


def local_path(location: str | os.PathLike[str] | None) -> str | None:
    """The absolute path on this machine that ``location`` names (see the module's rule), or
    None when it is on another file system or absent. ``file://HOST/x`` for another host is
    not local."""
    if location is None:
        return None
    text = os.fspath(location)
    if text == "":
        return None
    s = scheme(text)
    if s is None:
        return os.path.abspath(text)
    if s != "file":
        return None
    rest = text[len("file:"):]
    if rest.startswith("//"):
        host, sep, path = rest[2:].partition("/")
        if host not in ("", "localhost"):
            return None
        rest = sep + path
    return os.path.abspath(rest or "/")


def is_local(location: str) -> bool:
    return local_path(location) is not None


def uri_path(uri: str) -> str:
    """A location that Spark or the metastore returned, for comparing: ``file:`` URIs (which
    Spark %-encodes) become their decoded local path; other URIs are kept as they are."""
    if scheme(uri) == "file":
        return os.path.normpath(unquote(urlsplit(uri).path)) or "/"
    if scheme(uri) is None:
        return os.path.normpath(uri)
    return uri.rstrip("/")


def check_table_location(flag: str, location: str | None) -> None:
    """Refuse, before any work, a local folder for the tables whose name Spark and Hive
    cannot agree on (``%``, ``#``, ``?``)."""
    path = local_path(location)
    if path is None:
        return
    bad = sorted({c for c in path if c in TABLE_PATH_UNSAFE})
    if bad:
        raise ConfigError(f"{flag} {location}: expected a folder whose path has none of the characters "
                          f"{' '.join(TABLE_PATH_UNSAFE)} (Spark and the Hive metastore encode them differently), "
                          f"got {' '.join(bad)} in {path}; choose another folder")


def warehouse_path(warehouse: str) -> str:
    """The local folder ``--warehouse`` names: it holds the tables and the embedded metastore."""
    path = local_path(warehouse)
    if path is None:
        raise ConfigError(f"--warehouse {warehouse}: expected a local or mounted folder (it also holds the embedded "
                          "metastore), got a location on another file system; to keep the tables there, give it as "
                          "--location with a metastore of your own")
    check_table_location("--warehouse", warehouse)
    return path
