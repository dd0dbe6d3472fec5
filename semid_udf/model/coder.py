"""semid's models: a residual quantiser of a latent, behind an encoder (``model.kind``).

- ``rqvae``: a TIGER-style RQ-VAE: MLP encoder, residual quantizer with frozen codebooks, MLP
  decoder.
- ``rqkmeans``: residual k-means on the inputs (optionally L2-normalised): the same quantiser,
  with no network around it.

Residual quantisation (Zeghidour et al. 2021, "SoundStream"; Lee et al. 2022, "Autoregressive
Image Generation using Residual Quantization") as used for generative retrieval by TIGER
(Rajput et al. 2023, "Recommender Systems with Generative Retrieval"): each level picks the
nearest code to what the previous levels left unexplained.

Codebooks are *buffers*: they are saved and loaded with the weights, never re-initialised on
a forward call (the origin's quantizer re-ran k-means per batch, so one item got different
codes in different batches). Training fills them (see ``train.py``).
No pyspark import here.
"""
from __future__ import annotations

from typing import Callable, Literal, cast, overload

import torch
from torch import nn

from semid_udf.config import ModelConfig


def mlp(dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ResidualQuantizer(nn.Module):
    """``levels`` codebooks of ``codebook_size`` codes of ``dim`` floats, applied residually."""

    codebooks: torch.Tensor  # a buffer (register_buffer below)

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
        # min(dim) is about twice as fast as argmin on CPU; both return the first minimum (documented)
        return dist.min(dim=1).indices

    def forward(self, z: torch.Tensor, assign_last: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Return (codes ``long[B, L]``, quantised ``z``, the residual entering each level).
        ``assign_last(residual, codebook)``, when given, picks the last level's codes instead of
        the nearest code (training only: a balanced assignment over the batch)."""
        residual, quantized = z, torch.zeros_like(z)
        codes, residuals = [], []
        for level in range(self.levels):
            residuals.append(residual)
            if assign_last is not None and level == self.levels - 1:
                idx = assign_last(residual, self.codebooks[level])
            else:
                idx = self.nearest(residual, self.codebooks[level])
            q = self.codebooks[level][idx]
            quantized = quantized + q
            residual = residual - q
            codes.append(idx)
        return torch.stack(codes, dim=1), quantized, residuals

    @staticmethod
    def _top(part: torch.Tensor, sq: torch.Tensor, top: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``top`` nearest codes of each row of ``part`` (``||c||^2 - 2 r.c``, as the search
        computed it) and their squared distances (``part + ||r||^2``); ties to the lower index,
        so the first is the code the search chose."""
        order = torch.sort(part, dim=1, stable=True).indices[:, :top]
        return order, part.gather(1, order) + sq

    def last_level_candidates(self, z: torch.Tensor, beam: int, top: int
                              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(codes ``long[B, L]``, the ``top`` nearest last-level codes for each row's own
        prefix ``long[B, top]`` (the first is its code), their squared distances ``[B, top]``),
        from the very distances the search chose by."""
        return cast("tuple[torch.Tensor, torch.Tensor, torch.Tensor]", self.beam_codes(z, beam, top))

    @overload
    def beam_codes(self, z: torch.Tensor, beam: int, top: Literal[0] = 0) -> torch.Tensor: ...

    @overload
    def beam_codes(self, z: torch.Tensor, beam: int, top: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...

    def beam_codes(self, z: torch.Tensor, beam: int, top: int = 0) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Codes ``long[B, L]`` by beam search: keep the ``beam`` code prefixes with the smallest
        residual at each level, and return the one with the smallest final residual (as FAISS's
        ``ResidualQuantizer`` encodes). ``beam = 1`` is the greedy :meth:`forward`. Each row's
        search depends only on that row, so codes do not depend on the batch. With ``top`` > 0,
        also the last level's ``top`` nearest codes for the chosen prefix and their distances
        (see :meth:`last_level_candidates`)."""
        if beam <= 1:
            if top <= 0:
                return self.forward(z)[0]
            residual, level_codes = z, []
            for level in range(self.levels):
                cb = self.codebooks[level]
                part = torch.addmm((cb * cb).sum(1), residual, cb.t(), beta=1.0, alpha=-2.0)
                idx = part.min(dim=1).indices
                if level == self.levels - 1:
                    cand, dist = self._top(part, (residual * residual).sum(1, keepdim=True), top)
                residual = residual - cb[idx]
                level_codes.append(idx)
            return torch.stack(level_codes, dim=1), cand, dist
        n, k = z.shape[0], self.codebook_size
        rows = torch.arange(n, device=z.device).unsqueeze(1)
        codes: torch.Tensor | None
        res, codes, width = z, None, 1  # res: [n * width, dim], codes: [n * width, level]
        for level in range(self.levels):
            cb = self.codebooks[level]
            keep = beam if level < self.levels - 1 else 1
            # Per prefix, its best `keep` children (as greedy does: ||r||^2 is left out within a
            # prefix); then ||r||^2 is added to those few to rank the children of all prefixes.
            part = torch.addmm((cb * cb).sum(1), res, cb.t(), beta=1.0, alpha=-2.0)
            if keep == 1:
                best_part, child = part.min(dim=1, keepdim=True)
            else:
                best_part, child = part.topk(min(keep, k), dim=1, largest=False)
            cand = (best_part + (res * res).sum(1, keepdim=True)).view(n, -1)  # [n, width * keep]
            child = child.view(n, -1)
            pick = cand.min(dim=1, keepdim=True).indices if keep == 1 else cand.topk(min(keep, cand.shape[1]), dim=1,
                                                                                  largest=False).indices
            per = cand.shape[1] // width
            parent = (rows * width + torch.div(pick, per, rounding_mode="floor")).reshape(-1)
            code = child.gather(1, pick).reshape(-1)
            if top > 0 and level == self.levels - 1:
                top_codes, top_dist = self._top(part[parent], (res[parent] * res[parent]).sum(1, keepdim=True), top)
            res = res[parent] - cb[code]
            codes = code.unsqueeze(1) if codes is None else torch.cat([codes[parent], code.unsqueeze(1)], dim=1)
            width = pick.shape[1]
        codes = cast(torch.Tensor, codes)  # set by every level (levels >= 1)
        return (codes, top_codes, top_dist) if top > 0 else codes

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Sum of the chosen codes per row: the quantised latent of ``codes`` ``[B, L]``."""
        return cast(torch.Tensor, sum(self.codebooks[level][codes[:, level]] for level in range(self.levels)))


class ResidualCoder(nn.Module):
    """What every semid model is: an ``encoder`` from inputs to latents, the residual
    ``quantizer`` of those latents, and a ``decoder`` back to the input space. Inference (codes,
    beam search, the finite check, the collision candidates) is defined here once, so an
    RQ-VAE and residual k-means encode, publish and resolve collisions the same way."""

    cfg: ModelConfig
    encoder: nn.Module
    quantizer: ResidualQuantizer
    decoder: nn.Module

    def input_space(self, x: torch.Tensor) -> torch.Tensor:
        """What the decoder reconstructs for inputs ``x`` (the inputs themselves, unless the
        encoder normalises them)."""
        return x

    @torch.no_grad()
    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes, quantised latent) of latents ``z`` as inference defines them (``model.beam``)."""
        codes = self.quantizer.beam_codes(z, self.cfg.beam)
        return codes, self.quantizer.decode_codes(codes)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Semantic-ID codes ``long[B, levels]`` of embeddings ``float32[B, input_dim]``
        (beam search of width ``model.beam``; greedy when it is 1)."""
        return self.quantizer.beam_codes(self.encoder(x), self.cfg.beam)

    @torch.no_grad()
    def encode_candidates(self, x: torch.Tensor, top: int
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`encode_checked` plus each row's ``top`` nearest last-level codes for its own
        prefix and their squared distances (for resolving collisions by meaning)."""
        z = self.encoder(x)
        codes, cand, dist = self.quantizer.last_level_candidates(z, self.cfg.beam, top)
        err = (z - self.quantizer.decode_codes(codes)).square().sum(1)
        ok = torch.isfinite(z).all(1) & torch.isfinite(err) & torch.isfinite(dist).all(1)
        return codes, ok, cand, dist

    @torch.no_grad()
    def encode_checked(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes ``long[B, levels]``, ``ok`` bool[B]): ``ok`` is False where the latent or the
        quantisation error ``||z - zq||^2`` is NaN or infinite. A finite input can still
        overflow the encoder (values near the float32 maximum); the codes of such a row were
        chosen among NaN/Inf distances and mean nothing, so they must never be published."""
        z = self.encoder(x)
        codes = self.quantizer.beam_codes(z, self.cfg.beam)
        err = (z - self.quantizer.decode_codes(codes)).square().sum(1)
        return codes, torch.isfinite(z).all(1) & torch.isfinite(err)


class RQVAE(ResidualCoder):
    """``model.kind=rqvae``: MLP encoder, residual quantiser of its latent, MLP decoder."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.input_dim <= 0:
            raise ValueError(f"model.input_dim must be known to build a model, got {cfg.input_dim}")
        self.cfg = cfg
        dims = [cfg.input_dim, *cfg.hidden_dims, cfg.latent_dim]
        self.encoder = mlp(dims)
        self.quantizer = ResidualQuantizer(cfg.levels, cfg.codebook_size, cfg.latent_dim)
        self.decoder = mlp(dims[::-1])

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        z = self.encoder(x)
        codes, zq, residuals = self.quantizer(z)
        z_st = z + (zq - z).detach()  # straight-through estimator
        x_hat = self.decoder(z_st)
        return {"x_hat": x_hat, "z": z, "zq": zq, "codes": codes, "residuals": residuals}


class L2Normalize(nn.Module):
    """Each row divided by its L2 norm (a zero row stays zero; NaN/Inf stay non-finite, so the
    finite check of :meth:`ResidualCoder.encode_checked` still refuses them)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.norm(dim=1, keepdim=True)
        return x / torch.where(norm > 0, norm, torch.ones_like(norm))


class RQKMeans(ResidualCoder):
    """``model.kind=rqkmeans``: residual k-means on the inputs themselves (Juang & Gray 1982,
    "Multiple stage vector quantization"; the tokenizer of OneRec, Deng et al. 2025, with
    balanced levels). No network: the latent is the input (L2-normalised when
    ``model.normalize``), the codebooks live in the input space and the decoder is the identity,
    so the quantisation error is the input reconstruction error. The codebooks are the only
    weights (``quantizer.codebooks``); an item's codes depend on the item alone."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.input_dim <= 0:
            raise ValueError(f"model.input_dim must be known to build a model, got {cfg.input_dim}")
        self.cfg = cfg
        self.encoder = L2Normalize() if cfg.normalize else nn.Identity()
        self.quantizer = ResidualQuantizer(cfg.levels, cfg.codebook_size, cfg.input_dim)
        self.decoder = nn.Identity()

    def input_space(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


KINDS = {"rqvae": RQVAE, "rqkmeans": RQKMeans}


def build(cfg: ModelConfig) -> ResidualCoder:
    """The one place a semid model is built from its configuration (``model.kind``)."""
    try:
        cls = KINDS[cfg.kind]
    except KeyError:
        raise ValueError(f"model.kind: expected one of {', '.join(KINDS)}; got {cfg.kind!r}") from None
    return cls(cfg)
