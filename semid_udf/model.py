"""A TIGER-style RQ-VAE: MLP encoder, residual quantizer with frozen codebooks, MLP decoder.

Residual quantisation (Zeghidour et al. 2021, "SoundStream"; Lee et al. 2022, "Autoregressive
Image Generation using Residual Quantization") as used for generative retrieval by TIGER
(Rajput et al. 2023, "Recommender Systems with Generative Retrieval"): each level picks the
nearest code to what the previous levels left unexplained.

Codebooks are *buffers*: they are saved and loaded with the weights, never re-initialised on
a forward call (the origin's quantizer re-ran k-means per batch, so one item got different
codes in different batches). Training updates them by EMA (see ``train.py``).
No pyspark import here.
"""
from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig


def mlp(dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ResidualQuantizer(nn.Module):
    """``levels`` codebooks of ``codebook_size`` codes of ``dim`` floats, applied residually."""

    def __init__(self, levels: int, codebook_size: int, dim: int):
        super().__init__()
        self.levels, self.codebook_size, self.dim = levels, codebook_size, dim
        self.register_buffer("codebooks", torch.zeros(levels, codebook_size, dim))

    @staticmethod
    def nearest(r: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code (L2) per row; ties go to the lowest index.

        ``||r||^2`` is the same for every code of a row, so it is left out: one ``addmm``.
        """
        dist = torch.addmm((codebook * codebook).sum(1), r, codebook.t(), beta=1.0, alpha=-2.0)
        return dist.argmin(dim=1)  # torch documents argmin as returning the first minimum

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Return (codes ``long[B, L]``, quantised ``z``, the residual entering each level)."""
        residual, quantized = z, torch.zeros_like(z)
        codes, residuals = [], []
        for level in range(self.levels):
            residuals.append(residual)
            idx = self.nearest(residual, self.codebooks[level])
            q = self.codebooks[level][idx]
            quantized = quantized + q
            residual = residual - q
            codes.append(idx)
        return torch.stack(codes, dim=1), quantized, residuals

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Sum of the chosen codes per row: the quantised latent of ``codes`` ``[B, L]``."""
        return sum(self.codebooks[level][codes[:, level]] for level in range(self.levels))


class RQVAE(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.input_dim <= 0:
            raise ValueError(f"model.input_dim must be known to build a model, got {cfg.input_dim}")
        self.cfg = cfg
        dims = [cfg.input_dim, *cfg.hidden_dims, cfg.latent_dim]
        self.encoder = mlp(dims)
        self.quantizer = ResidualQuantizer(cfg.levels, cfg.codebook_size, cfg.latent_dim)
        self.decoder = mlp(dims[::-1])

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Semantic-ID codes ``long[B, levels]`` of embeddings ``float32[B, input_dim]``."""
        codes, _, _ = self.quantizer(self.encoder(x))
        return codes

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        z = self.encoder(x)
        codes, zq, residuals = self.quantizer(z)
        z_st = z + (zq - z).detach()  # straight-through estimator
        x_hat = self.decoder(z_st)
        return {"x_hat": x_hat, "z": z, "zq": zq, "codes": codes, "residuals": residuals}
