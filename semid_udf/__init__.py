"""semid: RQ-VAE semantic IDs for a recommendation catalogue, published as a Parquet table."""

__version__ = "0.1.0"
