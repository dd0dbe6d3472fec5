"""An RQ-VAE of the kind many teams already have, written for this example in the shape of
common competition baselines: an MLP encoder and decoder, residual vector quantisation with
one codebook per level (kept as buffers, so they travel in the state dict), and a method that
returns the codes as a ``LongTensor[batch, levels]``.

semid runs it through ``build`` (the factory): ``build(config, tensors)`` gets the
checkpoint's config.json content and the stored tensors and returns the model. Nothing in
this file knows about semid.
"""
from __future__ import annotations

import re

import torch
import torch.nn as nn
import torch.nn.functional as F


class RQEncoder(nn.Module):
    def __init__(self, input_dim: int, hidden_channels: list[int], latent_dim: int):
        super().__init__()
        dims = [input_dim, *hidden_channels]
        layers: list[nn.Module] = []
        for a, b in zip(dims, dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(dims[-1], latent_dim))
        self.stages = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)


class RQDecoder(nn.Module):
    def __init__(self, latent_dim: int, hidden_channels: list[int], output_dim: int):
        super().__init__()
        dims = [latent_dim, *reversed(hidden_channels)]
        layers: list[nn.Module] = []
        for a, b in zip(dims, dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(dims[-1], output_dim))
        self.stages = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.stages(z)


class VQEmbedding(nn.Module):
    """One level: the nearest of ``num_clusters`` codewords (squared L2, ties to the lowest index)."""

    def __init__(self, num_clusters: int, codebook_emb_dim: int):
        super().__init__()
        self.register_buffer("codebook", torch.zeros(num_clusters, codebook_emb_dim))

    def _get_codebook(self, data: torch.Tensor) -> torch.Tensor:
        return self.codebook  # fixed after training: an item's code depends on the item alone

    @staticmethod
    def _create_semantic_id(data: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
        distances = (data.square().sum(1, keepdim=True) - 2 * data @ codebook.T + codebook.square().sum(1))
        return distances.argmin(dim=1)

    def forward(self, data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codebook = self._get_codebook(data)
        ids = self._create_semantic_id(data, codebook)
        return codebook[ids], ids


class RQ(nn.Module):
    """Residual quantiser: each level quantises what the levels before it left over."""

    def __init__(self, num_codebooks: int, codebook_size: int, codebook_emb_dim: int, vq_class=VQEmbedding):
        super().__init__()
        self.vqmodules = nn.ModuleList(vq_class(codebook_size, codebook_emb_dim) for _ in range(num_codebooks))

    def quantize(self, data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        residual, quantised, ids = data, torch.zeros_like(data), []
        for vq in self.vqmodules:
            q, i = vq(residual)
            residual = residual - q
            quantised = quantised + q
            ids.append(i)
        return quantised, torch.stack(ids, dim=1)


class RQVAE(nn.Module):
    def __init__(self, input_dim: int, hidden_channels: list[int], latent_dim: int, num_codebooks: int,
                 codebook_size: int, beta: float = 0.25, vq_class=VQEmbedding):
        super().__init__()
        self.encoder = RQEncoder(input_dim, hidden_channels, latent_dim)
        self.decoder = RQDecoder(latent_dim, hidden_channels, input_dim)
        self.rq = RQ(num_codebooks, codebook_size, latent_dim, vq_class)
        self.beta = beta

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The latent (float): not the codes."""
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.encode(x)
        zq, ids = self.rq.quantize(z)
        x_hat = self.decoder(z + (zq - z).detach())  # straight-through estimator
        loss = F.mse_loss(x_hat, x) + self.beta * F.mse_loss(z, zq.detach())
        return x_hat, loss, ids

    @torch.no_grad()
    def get_codes(self, x: torch.Tensor) -> torch.Tensor:
        """Semantic ID codes, ``LongTensor[batch, levels]``."""
        return self.rq.quantize(self.encode(x))[1]

    @torch.no_grad()
    def fit_codebooks(self, x: torch.Tensor, iters: int = 10, seed: int = 0) -> None:
        """Residual k-means of the latents of ``x``, level by level (training only)."""
        g = torch.Generator().manual_seed(seed)
        residual = self.encode(x)
        for vq in self.rq.vqmodules:
            k = vq.codebook.shape[0]
            centres = residual[torch.randperm(len(residual), generator=g)[:k]].clone()
            for _ in range(iters):
                ids = vq._create_semantic_id(residual, centres)
                sums = torch.zeros_like(centres).index_add_(0, ids, residual)
                counts = torch.bincount(ids, minlength=k).unsqueeze(1)
                centres = torch.where(counts > 0, sums / counts.clamp_min(1), centres)
            vq.codebook.copy_(centres)
            residual = residual - centres[vq._create_semantic_id(residual, centres)]


def architecture(tensors: dict[str, torch.Tensor]) -> tuple[list[int], int]:
    """(hidden_channels, latent_dim) read off the encoder's weight shapes."""
    found = sorted((int(m.group(1)), name) for name in tensors
                   if (m := re.fullmatch(r"encoder\.stages\.(\d+)\.weight", name)))
    if not found:
        raise ValueError(f"no encoder.stages.N.weight among the tensors {sorted(tensors)[:10]}")
    widths = [int(tensors[name].shape[0]) for _, name in found]
    return widths[:-1], widths[-1]


def make(config: dict, tensors: dict[str, torch.Tensor], vq_class=VQEmbedding) -> RQVAE:
    m = config["model"]
    hidden, latent = architecture(tensors)
    model = RQVAE(int(m["input_dim"]), hidden, latent, int(m["levels"]), int(m["codebook_size"]), vq_class=vq_class)
    model.load_state_dict(tensors, strict=True)
    return model


def build(config: dict, tensors: dict[str, torch.Tensor]) -> RQVAE:
    """The factory semid calls: ``build(config.json as a dict, tensors) -> model``."""
    return make(config, tensors)
