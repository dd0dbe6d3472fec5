"""Refusals that happen before any Spark work: unsafe output paths, a tampered checkpoint."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from semid_udf.table.publish import check_paths
from semid_udf.errors import UnsafeSettingError

from .conftest import ROOT, tampered_copy


@pytest.mark.parametrize("inp, ck, wh, table", [
    ("{t}/wh/db.db/t_data", "{t}/ck", "{t}/wh", "db.t"),     # output is the input
    ("{t}/wh/db.db/t_data/part", "{t}/ck", "{t}/wh", "db.t"),  # input inside the output
    ("{t}/wh/db.db/t_manifest", "{t}/ck", "{t}/wh", "db.t"),  # another of the table's folders
    ("{t}/wh", "{t}/ck", "{t}/wh", "db.t"),                  # output inside the input
    ("{t}/in", "{t}/wh", "{t}/wh", "db.t"),                  # output inside the checkpoint
])
def test_unsafe_output_locations_are_refused(tmp_path, inp, ck, wh, table):
    with pytest.raises(UnsafeSettingError, match="refusing to write"):
        check_paths(inp.format(t=tmp_path), ck.format(t=tmp_path), wh.format(t=tmp_path), table)


def test_safe_locations_pass(tmp_path):
    check_paths(str(tmp_path / "in"), str(tmp_path / "ck"), str(tmp_path / "wh"), "db.t")
    check_paths(str(tmp_path / "wh" / "db.db" / "other"), str(tmp_path / "ck"), str(tmp_path / "wh"), "db.t")


def test_tampered_checkpoint_stops_the_job_before_spark(tiny_checkpoint, tmp_path):
    ck = tampered_copy(tiny_checkpoint, tmp_path / "ck")
    p = subprocess.run([str(Path(sys.executable).parent / "semid-assign"), "--input", str(tmp_path / "in"),
                        "--checkpoint", str(ck), "--table", "db.t", "--warehouse", str(tmp_path / "wh")],
                       capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYSPARK_PYTHON=sys.executable),
                       timeout=120)
    assert p.returncode == 2
    assert "sha256 expected" in p.stderr.strip().splitlines()[-1]
    assert "log4j" not in p.stderr and not (tmp_path / "wh").exists()  # no JVM started, nothing written


# One rule for every location a user gives (--warehouse, --location, --input, --checkpoint,
# --stream-checkpoint, --out): what it names on this machine, or None when it is elsewhere.
@pytest.mark.parametrize("given, expected", [
    ("/x", "/x"),
    ("x", "{cwd}/x"),
    ("a/../x", "{cwd}/x"),
    ("file:/x", "/x"),
    ("file:///x", "/x"),
    ("file://localhost/x", "/x"),
    ("file://otherhost/x", None),
    ("FILE:/x", "/x"),
    ("s3://b/x", None),
    ("s3a://b/x", None),
    ("abfss://c@acct.dfs.core.windows.net/x", None),
    ("dbfs:/x", None),
    ("/dbfs/x", "/dbfs/x"),
    ("/Volumes/cat/db/vol/x", "/Volumes/cat/db/vol/x"),
    ("/tmp/with space/x", "/tmp/with space/x"),
    ("file:/tmp/with space", "/tmp/with space"),
    ("/tmp/p_pct%41x", "/tmp/p_pct%41x"),  # literal, as Spark reads it: never %-decoded
    ("file:/tmp/p_pct%41x", "/tmp/p_pct%41x"),
    ("/tmp/a#b", "/tmp/a#b"),
    ("C:/data/x", "{cwd}/C:/data/x"),  # a one-letter "scheme" is a drive letter: a path
    ("", None),
    (None, None),
])
def test_local_path_rule(given, expected):
    from semid_udf.paths import local_path

    want = expected.format(cwd=os.getcwd()) if expected else None
    assert local_path(given) == want


@pytest.mark.parametrize("uri, expected", [
    ("file:/tmp/a%20b/part-0.parquet", "/tmp/a b/part-0.parquet"),  # Spark's file URIs come %-encoded
    ("file:///tmp/x/", "/tmp/x"),
    ("/tmp/x/", "/tmp/x"),
    ("s3://b/x/", "s3://b/x"),
])
def test_locations_spark_returns_are_decoded_for_comparing(uri, expected):
    from semid_udf.paths import uri_path

    assert uri_path(uri) == expected


@pytest.mark.parametrize("wh", ["/tmp/p_pct%41x", "/tmp/a#b", "file:/tmp/a?b"])
def test_a_table_folder_spark_and_hive_disagree_on_is_refused_before_any_work(wh):
    from semid_udf.errors import ConfigError
    from semid_udf.paths import warehouse_path

    with pytest.raises(ConfigError, match=r"expected a folder whose path has none of the characters % # \?"):
        warehouse_path(wh)


def test_a_warehouse_on_another_file_system_is_refused():
    from semid_udf.errors import ConfigError
    from semid_udf.paths import warehouse_path

    with pytest.raises(ConfigError, match="--warehouse s3://b/wh: expected a local or mounted folder"):
        warehouse_path("s3://b/wh")
    assert warehouse_path("file:///tmp/wh") == "/tmp/wh"
