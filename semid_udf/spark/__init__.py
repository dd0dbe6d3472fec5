"""Layer 3, Spark: sessions, reading any input, the UDF and the IDs as DataFrames, progress."""
