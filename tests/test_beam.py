"""Beam-search encoding, stated as properties (after faiss tests/test_residual_quantizer.py)."""
import dataclasses
import json

import numpy as np
import torch

from semid_udf.model.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from semid_udf.config import EncodeConfig, ModelConfig, PluginConfig
from semid_udf.model.encode import CodeEncoder
from semid_udf.model.coder import RQVAE, ResidualQuantizer

from .conftest import clustered


def quantizer(seed=0, levels=4, k=16, dim=8):
    g = torch.Generator().manual_seed(seed)
    q = ResidualQuantizer(levels, k, dim)
    scales = torch.tensor([1.0, 0.5, 0.25, 0.125])[:levels].view(levels, 1, 1)
    q.codebooks.copy_(torch.randn(levels, k, dim, generator=g) * scales)
    return q, torch.randn(2000, dim, generator=g)


def error(q, z, codes):
    return float(((z - q.decode_codes(codes)) ** 2).sum())


def test_beam_one_is_the_greedy_quantizer():
    q, z = quantizer()
    torch.testing.assert_close(q.beam_codes(z, 1), q(z)[0], rtol=0, atol=0)


def test_a_wider_beam_is_never_worse_in_total():
    q, z = quantizer(seed=1)
    errs = [error(q, z, q.beam_codes(z, b)) for b in (1, 2, 4, 8)]
    assert errs == sorted(errs, reverse=True) and errs[-1] < errs[0]


def test_beam_codes_do_not_depend_on_the_other_rows():
    q, z = quantizer(seed=2)
    whole = q.beam_codes(z, 5)
    alone = torch.cat([q.beam_codes(z[i:i + 1], 5) for i in range(0, 50)])
    torch.testing.assert_close(alone, whole[:50], rtol=0, atol=0)
    shuffled = torch.randperm(len(z), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(q.beam_codes(z[shuffled], 5), whole[shuffled], rtol=0, atol=0)


def test_beam_finds_the_exhaustive_best_when_it_covers_every_prefix():
    q, z = quantizer(seed=3, levels=2, k=6, dim=4)
    best = q.beam_codes(z, 6)  # width >= K: every level-1 code is kept, so the search is exhaustive
    grid = torch.cartesian_prod(torch.arange(6), torch.arange(6))
    errs = ((z.unsqueeze(1) - q.decode_codes(grid).unsqueeze(0)) ** 2).sum(-1)
    torch.testing.assert_close(errs.gather(1, (best[:, 0] * 6 + best[:, 1]).unsqueeze(1)).squeeze(1),
                               errs.min(1).values)


def test_beam_is_saved_with_the_model_and_old_checkpoints_stay_greedy(tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig(input_dim=16, hidden_dims=(32,), latent_dim=8, levels=3, codebook_size=16, beam=4)
    model = RQVAE(cfg)
    model.quantizer.codebooks.normal_()
    x = clustered(300, 16, seed=7)
    save_checkpoint(model, cfg, tmp_path / "b4")
    loaded, blob = load_checkpoint(tmp_path / "b4")
    assert loaded.cfg.beam == 4 and blob.model["beam"] == 4
    codes = CodeEncoder(blob, EncodeConfig(micro_batch=64), PluginConfig())(x)
    z = model.encoder(torch.from_numpy(x))
    np.testing.assert_array_equal(codes, model.quantizer.beam_codes(z, 4).numpy())
    # A checkpoint written before model.beam existed has no such key: it encodes greedily.
    greedy = dataclasses.replace(cfg, beam=1)
    save_checkpoint(model, greedy, tmp_path / "old")
    conf = json.loads((tmp_path / "old" / "config.json").read_text())
    del conf["model"]["beam"]
    from semid_udf.model.checkpoint import version_of

    conf["model_version"] = version_of(conf["model"], read_checkpoint(tmp_path / "old").tensors())
    (tmp_path / "old" / "config.json").write_text(json.dumps(conf))
    old, _ = load_checkpoint(tmp_path / "old")
    assert old.cfg.beam == 1
    np.testing.assert_array_equal(old.encode(torch.from_numpy(x)).numpy(), model.quantizer(z)[0].numpy())


def test_nearest_takes_the_first_of_tied_codes():
    q, z = quantizer(seed=4)
    cb = q.codebooks[0].clone()
    cb[7] = cb[3]  # an exact tie: code 3 must win, as argmin would pick it
    torch.testing.assert_close(ResidualQuantizer.nearest(z, cb), torch.cdist(z, cb).argmin(1), rtol=0, atol=0)
    assert not (ResidualQuantizer.nearest(z, cb) == 7).any()
