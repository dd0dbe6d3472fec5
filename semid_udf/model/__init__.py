"""Layer 1, the model: the residual quantiser (RQ-VAE or residual k-means), its checkpoint,
fitting and quality measures, a model brought in from elsewhere, and the pure encode function
with its format adapter. Nothing here imports pyspark."""
