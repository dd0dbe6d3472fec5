"""Reading the input Parquet in the Python workers with pyarrow (no pyspark here).

Why: handing ``array<float>`` rows from the JVM to Python made Spark's Arrow conversion the
most expensive part of a run, costlier than the model (bench/RESULTS.md): at D = 768 the
job ran at 0.27 of a single process that reads with pyarrow. So the driver plans the input
from the Parquet footers (files, row groups, row counts, column types), each Spark task
reads its own row groups with pyarrow, and only ids, reasons, hashes and codes go back to
the JVM.

Spark's rules are kept: files and folders whose names start with ``_`` or ``.`` are
skipped (``_SUCCESS``, ``.crc``), ``item_id`` may be bigint, int or string, the embedding a
list of float, double (cast to float32 like Spark's cast, when ``input.cast_double``) or half
float, a Spark ML vector, or binary blobs of ``input.binary_dtype``; either may be a field of
a struct column (``input.embedding_col=result.values``).
Every file is checked before any task starts, and a task checks that it read exactly the
rows its plan promised (a file replaced under a running job fails the task, it is never
half-read).

For files this process cannot open (``s3a://`` and the like, ``input.fetch=spark``), Spark's
binaryFile source hands each task whole files and :func:`read_fetched` decodes their bytes
with the same checks; the driver knows only the files' names, sizes and times then.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from typing import Iterator, cast

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from semid_udf.errors import InputError
from semid_udf.paths import local_path
from semid_udf.vectors import check_schema

log = logging.getLogger(__name__)

ID_COL, EMB_COL = "item_id", "embedding"


@dataclass(frozen=True)
class Part:
    """Consecutive row groups of one file."""

    path: str
    row_groups: tuple[int, ...]
    rows: int
    file_size: int


@dataclass(frozen=True)
class Unit:
    """One task's share of the input: row groups of one file, or several small files."""

    index: int
    parts: tuple[Part, ...]

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.parts)


OPEN_COST = 4 << 20  # bytes a file counts for at least, as Spark's spark.sql.files.openCostInBytes


@dataclass(frozen=True)
class InputPlan:
    source: str
    filesystem: pafs.FileSystem
    files: tuple[tuple[str, int, int], ...]  # (path, size, mtime ns): the run's fingerprint
    units: tuple[Unit, ...]
    rows: int
    id_type: pa.DataType  # int32, int64 or string: what every file's ids are cast to
    id_col: str
    emb_col: str
    cast_double: bool
    binary_dtype: str = ""


def open_filesystem(source: str) -> tuple[pafs.FileSystem, str]:
    local = local_path(source)
    if local is not None:
        return pafs.LocalFileSystem(), local
    try:
        return pafs.FileSystem.from_uri(source)
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"input {source}: pyarrow cannot open this filesystem ({str(e).splitlines()[0]}); "
                         "use input.reader=spark") from None


def _hidden(name: str) -> bool:
    """Spark's rule for names its file index skips."""
    return (name.startswith("_") and "=" not in name) or name.startswith(".") or name.endswith("._COPYING_")


def list_files(fs: pafs.FileSystem, root: str, source: str) -> list[pafs.FileInfo]:
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise InputError(f"input {source}: expected a Parquet file or folder, got a path that does not exist")
    if info.type == pafs.FileType.File:
        return [info]
    found = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    base = root.rstrip("/") + "/"
    files = [f for f in found if f.type == pafs.FileType.File
             and not any(_hidden(part) for part in f.path[len(base):].split("/"))]
    if not files:
        raise InputError(f"input {source}: expected Parquet files, found none (names starting with _ or . are skipped)")
    return sorted(files, key=lambda f: f.path)


def _footer(fs: pafs.FileSystem, info: pafs.FileInfo) -> pq.FileMetaData:
    try:
        with fs.open_input_file(info.path) as f:
            return pq.ParquetFile(f).metadata
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"input file {info.path}: cannot read it as Parquet: {str(e).splitlines()[0]}") from None


def named_files(paths: list[str], source: str) -> tuple[pafs.FileSystem, list[pafs.FileInfo]]:
    """The files a catalog names for table ``source`` (URIs or paths, all local or mounted), as
    the plan's file list; an error naming a file that is gone."""
    fs = pafs.LocalFileSystem()
    infos = fs.get_file_info([cast(str, local_path(p)) for p in paths])
    gone = [i.path for i in infos if i.type != pafs.FileType.File]
    if gone:
        raise InputError(f"input {source}: expected the data files its catalog names, got {len(gone)} missing "
                         f"(e.g. {gone[0]}); refresh the table (REFRESH TABLE) or use input.reader=spark")
    return fs, sorted(infos, key=lambda f: f.path)


def plan_input(source: str, id_col: str, emb_col: str, cast_double: bool, target_bytes: int = 128 << 20,
               cores: int = 1, threads: int = 16, binary_dtype: str = "", files: list[str] | None = None
               ) -> InputPlan:
    """Files, row groups and column types of ``source`` (or of ``files``: a table's data files,
    local or mounted, as its catalog names them); units of about ``target_bytes``
    (uncompressed, each file counting at least OPEN_COST) each, never splitting a row group:
    a big file gives several units, small files share one, as Spark packs its file splits.
    Like Spark, a unit is at most the input's size / ``cores``, so a small input still gives
    every core a task. A task holds one batch of its unit at a time (``batch_size`` rows)."""
    if files is not None:
        fs, infos = named_files(files, source)
    else:
        fs, root = open_filesystem(source)
        infos = list_files(fs, root, source)
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(infos)))) as pool:
        footers = list(pool.map(lambda f: _footer(fs, f), infos))
    total = sum(OPEN_COST + sum(m.row_group(i).total_byte_size for i in range(m.num_row_groups)) for m in footers)
    target_bytes = min(target_bytes, max(OPEN_COST, total // max(1, cores)))
    id_types: dict[pa.DataType, str] = {}  # id type -> the first file that has it
    units: list[Unit] = []
    parts: list[Part] = []  # the unit being filled
    size = 0
    rows = 0

    def close() -> None:
        nonlocal parts, size
        if parts:
            units.append(Unit(len(units), tuple(parts)))
        parts, size = [], 0

    for info, meta in zip(infos, footers):
        id_types.setdefault(check_schema(meta.schema.to_arrow_schema(), info.path, id_col, emb_col, cast_double,
                                         binary_dtype), info.path)
        group: list[int] = []
        group_rows = 0
        size += OPEN_COST
        for rg in range(meta.num_row_groups):
            r = meta.row_group(rg)
            if (group or parts) and size + r.total_byte_size > target_bytes:
                if group:
                    parts.append(Part(info.path, tuple(group), group_rows, info.size))
                close()
                size = OPEN_COST  # this file is opened by the next task too
                group, group_rows = [], 0
            group.append(rg)
            group_rows += r.num_rows
            size += r.total_byte_size
        if group_rows:
            parts.append(Part(info.path, tuple(group), group_rows, info.size))
        rows += meta.num_rows
    close()
    if pa.string() in id_types and len(id_types) > 1:
        ints = next(f for t, f in id_types.items() if t != pa.string())
        raise InputError(f"column {id_col!r}: expected one type in every file, got string (e.g. {id_types[pa.string()]}) "
                         f"and integers (e.g. {ints})")
    id_type = pa.string() if pa.string() in id_types else pa.int64() if pa.int64() in id_types else pa.int32()
    stamps = tuple((f.path, int(f.size), int(f.mtime_ns or 0)) for f in infos)
    log.info("input %s: %d rows in %d files, %d read tasks", source, rows, len(infos), len(units))
    return InputPlan(source, fs, stamps, tuple(units), rows, id_type, id_col, emb_col, cast_double, binary_dtype)


def _column(batch: pa.RecordBatch, path: str) -> pa.Array:
    head, *rest = path.split(".")
    col = batch.column(head)
    for part in rest:
        col = pc.struct_field(col, part)
    return col


def read_unit(plan: InputPlan, unit: Unit, batch_size: int) -> Iterator[pa.RecordBatch]:
    """The unit's rows as batches of (item_id, embedding list<float32>), in file order."""
    for part in unit.parts:
        yield from _read_part(plan, part, batch_size)


def _read_part(plan: InputPlan, part: Part, batch_size: int) -> Iterator[pa.RecordBatch]:
    got = 0
    with plan.filesystem.open_input_file(part.path) as f:
        if f.size() != part.file_size:
            raise InputError(f"input file {part.path}: expected {part.file_size} bytes (as planned), got {f.size()}: "
                             "it changed while the job ran")
        for b in _batches(pq.ParquetFile(f), part.path, plan, batch_size, list(part.row_groups)):
            got += b.num_rows
            yield b
    if got != part.rows:
        raise InputError(f"input file {part.path}: expected {part.rows} rows in row groups {list(part.row_groups)} "
                         f"(as planned), got {got}: it changed while the job ran")


def _batches(pf: pq.ParquetFile, path: str, plan: InputPlan | FetchPlan, batch_size: int,
             row_groups: list[int] | None = None) -> Iterator[pa.RecordBatch]:
    """(item_id, embedding) batches of an open file, its schema checked and its ids cast to
    the plan's id type."""
    file_ids = check_schema(pf.schema_arrow, path, plan.id_col, plan.emb_col, plan.cast_double, plan.binary_dtype)
    if file_ids != plan.id_type and not (pa.types.is_integer(file_ids) and plan.id_type == pa.int64()):
        raise InputError(f"column {plan.id_col!r}: expected {plan.id_type} (as planned from the input's schema), "
                         f"got {file_ids} (file {path})")
    for b in pf.iter_batches(batch_size=batch_size, row_groups=row_groups, columns=[plan.id_col, plan.emb_col],
                             use_threads=False):
        ids = _column(b, plan.id_col)
        if ids.type != plan.id_type:
            ids = pc.cast(ids, plan.id_type)
        # the embedding as stored (list of float/double/half, vector struct, binary): the
        # encode step reads every one of these types (semid_udf.worker.arrow)
        yield pa.RecordBatch.from_arrays([ids, _column(b, plan.emb_col)], names=[ID_COL, EMB_COL])


# ---------------------------------------------------------------------------------------
# Files whose bytes Spark fetched (input.fetch=spark): any URI Spark can read, with Spark's
# own file systems and credentials. Spark's binaryFile source hands each task whole files
# (path, modificationTime, length, content); pyarrow decodes them in the task.

@dataclass(frozen=True)
class FetchPlan:
    """What the driver knows before the fetch: the files as Spark listed them (URI, bytes,
    modification time in microseconds), the id type from the input's schema and the columns."""

    source: str
    files: tuple[tuple[str, int, int], ...]
    id_type: pa.DataType
    id_col: str
    emb_col: str
    cast_double: bool
    binary_dtype: str = ""

    @cached_property
    def listed(self) -> dict[str, tuple[int, int]]:
        """(bytes, modification time) by URI, built once per plan in a worker."""
        return {p: (size, mtime) for p, size, mtime in self.files}


def read_fetched(plan: FetchPlan, path: str, length: int, mtime_us: int, content: pa.Buffer | bytes,
                 batch_size: int) -> Iterator[pa.RecordBatch]:
    """The rows of one fetched file as batches of (item_id, embedding); an error naming the
    file when it is not the file the driver listed (it changed while the job ran)."""
    listed = plan.listed.get(path)
    if listed is None:
        raise InputError(f"input file {path}: expected one of the {len(plan.files)} files listed when the job started, "
                         "got a file that was not listed")
    if (length, mtime_us) != listed or len(content) != length:
        raise InputError(f"input file {path}: expected {listed[0]} bytes modified at {_utc(listed[1])} (as listed "
                         f"when the job started), got {len(content)} bytes modified at {_utc(mtime_us)}: it changed "
                         "while the job ran")
    try:
        pf = pq.ParquetFile(pa.BufferReader(content))
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"input file {path}: cannot read it as Parquet: {str(e).splitlines()[0]}") from None
    yield from _batches(pf, path, plan, batch_size)


def _utc(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, tz=timezone.utc).isoformat(timespec="milliseconds")
