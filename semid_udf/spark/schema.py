"""Every record semid writes, declared once: column names, types and order.

Each form a column list takes (the Arrow schema a Python task returns, the Spark
``StructType`` of a UDF or a ``mapInArrow``, the DDL of a table, the select list of a
write) is derived from one :class:`Schema` here, and rows are written by column name.
pyspark is imported only by :meth:`Schema.spark`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

_ARROW = {"int": pa.int32(), "bigint": pa.int64(), "string": pa.string(), "boolean": pa.bool_(),
          "timestamp": pa.timestamp("us"), "array<string>": pa.list_(pa.string()), "float": pa.float32(),
          "double": pa.float64(), "array<int>": pa.list_(pa.int32()), "array<float>": pa.list_(pa.float32())}
ID_TYPES = ("int", "bigint", "string")  # what item ids are published as


@dataclass(frozen=True)
class Schema:
    columns: tuple[tuple[str, str], ...]  # (name, Spark SQL type), in order; partition columns last
    partition_by: tuple[str, ...] = ()

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.columns]

    @property
    def data_columns(self) -> list[tuple[str, str]]:
        return [(n, t) for n, t in self.columns if n not in self.partition_by]

    def ddl(self, columns: list[tuple[str, str]] | None = None) -> str:
        return ", ".join(f"`{n}` {t}" for n, t in (self.columns if columns is None else columns))

    def arrow(self) -> pa.Schema:
        return pa.schema([(n, _ARROW[t]) for n, t in self.columns])

    def spark(self) -> Any:
        from pyspark.sql import types as T

        kinds = {"int": T.IntegerType(), "bigint": T.LongType(), "string": T.StringType(),
                 "boolean": T.BooleanType(), "timestamp": T.TimestampType(), "float": T.FloatType(),
                 "double": T.DoubleType(), "array<string>": T.ArrayType(T.StringType()),
                 "array<int>": T.ArrayType(T.IntegerType()), "array<float>": T.ArrayType(T.FloatType())}
        return T.StructType([T.StructField(n, kinds[t]) for n, t in self.columns])

    def cast(self, df: Any) -> Any:
        """``df``'s columns of this schema, by name, in order, as the declared types."""
        from pyspark.sql import functions as F

        return df.select(*[F.col(n).cast(t).alias(n) for n, t in self.columns])


def sid_cols(levels: int) -> list[str]:
    return [f"sid_{i}" for i in range(levels)]


def coded(levels: int, id_type: str, candidates: bool = False) -> Schema:
    """What the encode step returns for every input row: codes, or a reason and detail; with
    ``candidates``, each row's nearest last-level codes and their squared distances too."""
    return Schema((("item_id", id_type), ("reason", "string"), ("detail", "string"), ("embedding_hash", "bigint"))
                  + tuple((c, "int") for c in sid_cols(levels))
                  + ((("cand", "array<int>"), ("cand_dist", "array<float>")) if candidates else ()))


def codes_struct(levels: int) -> Schema:
    """The fields of :func:`semid_udf.semantic_codes`'s struct."""
    return Schema(tuple((c, "int") for c in sid_cols(levels)) + (("reason", "string"),))


def ids(levels: int, id_type: str) -> Schema:
    """The IDs of one model version, as :func:`semid_udf.semantic_ids` returns them."""
    return Schema((("item_id", id_type),) + tuple((c, "int") for c in sid_cols(levels))
                  + (("sid_suffix", "int"), ("semantic_id", "string"), ("embedding_hash", "bigint")))


def published(levels: int, id_type: str) -> Schema:
    """The table readers query (``<name>``): the IDs, the run that published them, the version."""
    return Schema(ids(levels, id_type).columns + (("run_id", "string"), ("model_version", "string")))


def segments(levels: int, id_type: str) -> Schema:
    """``<name>_data``: every run's rows in its own partition; readers reach only committed
    runs, through ``<name>``."""
    return Schema(ids(levels, id_type).columns + (("model_version", "string"), ("run_id", "string")),
                  partition_by=("model_version", "run_id"))


REJECTS = Schema((("item_id", "string"), ("reason", "string"), ("detail", "string"), ("model_version", "string"),
                  ("run_id", "string")), partition_by=("model_version", "run_id"))

MANIFEST = Schema((
    ("run_id", "string"), ("model_version", "string"), ("status", "string"), ("mode", "string"),
    ("started_at", "timestamp"), ("finished_at", "timestamp"),
    ("rows_in", "bigint"), ("rows_out", "bigint"), ("rows_rejected", "bigint"), ("rows_new", "bigint"),
    ("details", "string"), ("error", "string"),
    # the commit: its place in the table's history, the model it binds the version to, and
    # the runs and data files (relative to <name>_data's location) that make up the version
    ("seq", "bigint"), ("model_digest", "string"), ("segments", "array<string>"), ("files", "array<string>"),
    # a stream's commits: the stream (its checkpoint location and Spark's query id, hashed) and
    # the micro-batch; null for a batch run. Manifests made before these columns get them added
    # (their rows read as null; such rows carry the two in details.stream).
    ("stream_id", "string"), ("batch_id", "bigint"),
))
MANIFEST_ADDED = MANIFEST.columns[-2:]  # added to an existing manifest that lacks them
