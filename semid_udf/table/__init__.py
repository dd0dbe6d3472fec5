"""Layer 4, the published table: the catalog, the writer lock, the commit, the batch run,
streams and exports."""
