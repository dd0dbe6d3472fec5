"""Layer 2, the Python workers: an Arrow batch in, codes or a reject reason per row out, and
the pyarrow reader of Parquet read units. Imports pyspark for its types only."""
