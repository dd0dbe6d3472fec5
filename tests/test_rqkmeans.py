"""model.kind=rqkmeans, stated as properties: residual k-means fills the same quantiser as the
RQ-VAE, so its codes, checkpoint and version behave the same way; balanced levels keep their cap."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from semid_udf.model.checkpoint import build_model, read_checkpoint, save_checkpoint, version_of
from semid_udf.config import EncodeConfig, ModelConfig, PluginConfig, TrainConfig
from semid_udf.model.encode import CodeEncoder
from semid_udf.errors import CheckpointError, ConfigError
from semid_udf.model.train import capped_assign, fit, level_cap

from .conftest import clustered

KM = ModelConfig(kind="rqkmeans", levels=3, codebook_size=16)
TRAIN = TrainConfig(kmeans_iters=5, seed=5, threads=1)


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return clustered(2500, 12, seed=21, centers=60)


@pytest.fixture(scope="module")
def km_checkpoint(x, tmp_path_factory):
    model, meta = fit(x, KM, TRAIN)
    d = tmp_path_factory.mktemp("km") / "ck"
    save_checkpoint(model, model.cfg, d, training=meta)
    return d


def test_same_seed_and_threads_same_codebooks_and_version(x, tmp_path):
    a, _ = fit(x, KM, TRAIN)
    b, _ = fit(x, KM, TRAIN)
    assert torch.equal(a.quantizer.codebooks, b.quantizer.codebooks)
    va = save_checkpoint(a, a.cfg, tmp_path / "a")
    assert va == save_checkpoint(b, b.cfg, tmp_path / "b")
    c, _ = fit(x, KM, dataclasses.replace(TRAIN, seed=6))
    assert save_checkpoint(c, c.cfg, tmp_path / "c") != va


def test_codes_do_not_depend_on_batch_order_or_slicing(x, km_checkpoint):
    blob = read_checkpoint(km_checkpoint)
    whole = CodeEncoder(blob, EncodeConfig(micro_batch=1024), PluginConfig())(x)
    small = CodeEncoder(blob, EncodeConfig(micro_batch=7), PluginConfig())
    perm = np.random.default_rng(0).permutation(len(x))
    assert (small(x[perm])[np.argsort(perm)] == whole).all()
    parts = np.concatenate([small(x[s:s + 333]) for s in range(0, len(x), 333)])
    assert (parts == whole).all()
    assert (small(x[:1]) == whole[:1]).all()  # an item alone gets the codes it gets among others


def test_checkpoint_round_trips_and_records_its_kind(x, km_checkpoint):
    blob = read_checkpoint(km_checkpoint)
    assert blob.model["kind"] == "rqkmeans"
    assert blob.model["hidden_dims"] == [] and blob.model["latent_dim"] == 12  # no network: the latent is the input
    model = build_model(blob)
    assert set(model.state_dict()) == {"quantizer.codebooks"}
    again, _ = fit(x, KM, TRAIN)
    assert torch.equal(model.quantizer.codebooks, again.quantizer.codebooks)
    # residual k-means quantises the inputs: its reconstruction is the sum of the chosen codes
    codes = model.encode(torch.from_numpy(x[:50]))
    assert torch.allclose(model.quantizer.decode_codes(codes), model.decoder(model.quantizer.decode_codes(codes)))


def test_version_is_bound_to_the_weights_and_the_kind(km_checkpoint, tmp_path):
    blob = read_checkpoint(km_checkpoint)
    assert blob.model_version == version_of(blob.model, blob.tensors())
    tensors = blob.tensors()
    tensors["quantizer.codebooks"][0, 0, 0] += 1e-3
    assert version_of(blob.model, tensors) != blob.model_version
    assert version_of({**blob.model, "normalize": True}, blob.tensors()) != blob.model_version
    # tampered weights are refused before a model is built
    (tmp_path / "t").mkdir()
    for f in ("config.json", "model.safetensors"):
        (tmp_path / "t" / f).write_bytes((km_checkpoint / f).read_bytes())
    w = bytearray((tmp_path / "t" / "model.safetensors").read_bytes())
    w[-1] ^= 1
    (tmp_path / "t" / "model.safetensors").write_bytes(bytes(w))
    with pytest.raises(CheckpointError, match="sha256"):
        read_checkpoint(tmp_path / "t")


def test_an_rqvae_checkpoint_keeps_the_version_it_had_before_model_kind_existed(tiny_blob):
    assert "kind" not in tiny_blob.model and "normalize" not in tiny_blob.model
    assert tiny_blob.model_version == version_of(tiny_blob.model, tiny_blob.tensors())
    assert build_model(tiny_blob).cfg.kind == "rqvae"


def test_weights_of_another_kind_are_refused_with_what_does_not_fit(km_checkpoint, tmp_path):
    blob = read_checkpoint(km_checkpoint)
    config = json.loads(json.dumps(blob.config))
    del config["model"]["kind"]  # the same codebooks declared as an RQ-VAE
    from semid_udf.model.checkpoint import CheckpointBlob

    with pytest.raises(CheckpointError, match=r"missing \['decoder.0.bias'.*unexpected \[\]"):
        build_model(CheckpointBlob(config=config, weights=blob.weights))


def test_normalize_quantises_directions(x):
    model, meta = fit(x, dataclasses.replace(KM, normalize=True), TRAIN)
    enc_x = torch.from_numpy(x[:200])
    assert torch.equal(model.encode(enc_x), model.encode(enc_x * 4.0))  # an item at another length: same codes
    norms = model.quantizer.codebooks[0].norm(dim=1)
    assert float(norms.max()) <= 1.0 + 1e-5  # first-level centroids are means of unit vectors
    assert meta["normalize"] is True


def test_normalize_is_refused_for_an_rqvae():
    with pytest.raises(ConfigError, match="model.normalize: applies to model.kind=rqkmeans only"):
        ModelConfig(normalize=True).validate()
    with pytest.raises(ConfigError, match="model.kind: expected one of rqvae, rqkmeans; got 'vq'"):
        ModelConfig(kind="vq").validate()


@pytest.mark.parametrize("balance", ["last", "all"])
def test_balanced_levels_respect_their_cap_on_the_sample(x, balance):
    cfg = dataclasses.replace(TRAIN, kmeans_balance=balance, kmeans_cap=1.1)
    model, meta = fit(x, KM, cfg)
    cap = level_cap(len(x), cfg, 16)
    assert cap == int(np.ceil(1.1 * 2500 / 16))
    levels = [2] if balance == "last" else [0, 1, 2]
    assert meta["balanced_levels"] == levels
    for level in levels:
        assert meta["balanced"][f"level_{level}"]["largest_on_sample"] <= cap
        assert meta["balanced"][f"level_{level}"]["cap"] == cap


def test_capped_assign_keeps_every_cap_and_is_stable():
    g = torch.Generator().manual_seed(3)
    pts = torch.randn(300, 4, generator=g)
    pts[:150] *= 0.05  # a dense region that nearest assignment would pile into a few centroids
    cents = torch.randn(10, 4, generator=g) * 0.1
    for cap in (30, 31, 45):
        owner = capped_assign(pts, cents, cap)
        counts = torch.bincount(owner, minlength=10)
        assert int(counts.max()) <= cap and int(counts.sum()) == 300
        d = torch.cdist(pts, cents) ** 2
        mine = d[torch.arange(300), owner]
        worst_held = torch.full((10,), -float("inf")).scatter_reduce(0, owner, mine, "amax")
        # stable: no row prefers a centroid that is either not full or holds a row farther than it
        for i in range(300):
            better = d[i] < mine[i]
            full = counts == cap
            assert not (better & ~full).any()
            assert not (better & full & (d[i] < worst_held)).any()
    with pytest.raises(ValueError, match="cannot take 300 rows"):
        capped_assign(pts, cents, 29)


def test_kmeans_cap_below_one_is_refused():
    with pytest.raises(ConfigError, match="train.kmeans_cap: expected >= 1.0"):
        TrainConfig(kmeans_cap=0.9).validate()
    with pytest.raises(ConfigError, match="train.kmeans_balance: expected one of none, last, all"):
        TrainConfig(kmeans_balance="first").validate()
