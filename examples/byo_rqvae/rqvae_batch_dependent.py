"""The same RQ-VAE with one change that semid-import refuses: every call re-fits each level's
codebook by a few k-means steps on that call's batch before assigning codes, as some
baselines do when they build the codebook inside the forward pass. An item then gets other
codes in another batch, so its semantic ID would depend on which items Spark happened to
put beside it.
"""
from __future__ import annotations

import torch

from rqvae import VQEmbedding, make


class RefittingVQEmbedding(VQEmbedding):
    kmeans_steps = 3

    def _get_codebook(self, data: torch.Tensor) -> torch.Tensor:
        codebook = self.codebook.clone()
        for _ in range(self.kmeans_steps):  # Lloyd steps on this batch, from the trained codebook
            ids = self._create_semantic_id(data, codebook)
            sums = torch.zeros_like(codebook).index_add_(0, ids, data)
            counts = torch.bincount(ids, minlength=codebook.shape[0]).unsqueeze(1)
            codebook = torch.where(counts > 0, sums / counts.clamp_min(1), codebook)
        return codebook


def build(config: dict, tensors: dict[str, torch.Tensor]):
    return make(config, tensors, vq_class=RefittingVQEmbedding)
