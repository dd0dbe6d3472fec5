"""Checkpoints: save -> load keeps codes, versions come from content, loading never unpickles."""
import json
import pickle

import pytest
import torch

from semid_udf.model.checkpoint import build_model, load_checkpoint, read_checkpoint, save_checkpoint
from semid_udf.config import ModelConfig
from semid_udf.errors import CheckpointError
from semid_udf.model.coder import RQVAE

from .conftest import clustered, tampered_copy


def test_save_load_gives_identical_codes(tiny_checkpoint, tmp_path):
    model, blob = load_checkpoint(tiny_checkpoint)
    x = torch.from_numpy(clustered(500, 16, seed=9))
    codes = model.encode(x)
    save_checkpoint(model, model.cfg, tmp_path / "again")
    model2, blob2 = load_checkpoint(tmp_path / "again")
    assert torch.equal(codes, model2.encode(x))
    assert blob2.model_version == blob.model_version  # same weights + config -> same version


def test_codebooks_are_saved_buffers_not_lazily_initialised(tiny_blob):
    tensors = tiny_blob.tensors()
    assert tensors["quantizer.codebooks"].shape == (3, 16, 8)
    fresh = RQVAE(ModelConfig(input_dim=16, hidden_dims=(32,), latent_dim=8, levels=3, codebook_size=16))
    assert float(fresh.quantizer.codebooks.abs().sum()) == 0.0  # nothing until loaded
    loaded = build_model(tiny_blob)
    assert torch.equal(loaded.quantizer.codebooks, tensors["quantizer.codebooks"])


def test_version_changes_with_weights(tiny_checkpoint, tmp_path):
    model, blob = load_checkpoint(tiny_checkpoint)
    with torch.no_grad():
        model.quantizer.codebooks[0, 0, 0] += 1e-3
    v2 = save_checkpoint(model, model.cfg, tmp_path / "changed")
    assert v2 != blob.model_version and len(v2) == 12
    assert save_checkpoint(model, model.cfg, tmp_path / "explicit", model_version="prod-7") == "prod-7"
    assert read_checkpoint(tmp_path / "explicit").model_version == "prod-7"


def test_strict_load_refuses_missing_tensors(tiny_checkpoint, tmp_path):
    from safetensors.torch import save_file

    model, _ = load_checkpoint(tiny_checkpoint)
    sd = {k: v for k, v in model.state_dict().items() if k != "quantizer.codebooks"}
    d = tmp_path / "partial"
    save_checkpoint(model, model.cfg, d)
    save_file(sd, d / "model.safetensors")
    cfg = json.loads((d / "config.json").read_text())
    import hashlib

    cfg["weights_sha256"] = hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest()
    cfg["model_version_source"] = "explicit"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="missing \\['quantizer.codebooks'\\]"):
        load_checkpoint(d)


class _Boom:
    def __reduce__(self):
        import os

        return (os.makedirs, ("/tmp/semid-pickle-was-executed",))


def test_a_pickle_named_as_weights_is_refused_without_running_it(tiny_checkpoint, tmp_path):
    import os
    import shutil

    d = tmp_path / "evil"
    shutil.copytree(tiny_checkpoint, d)
    payload = pickle.dumps(_Boom())
    (d / "model.safetensors").write_bytes(payload)
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        read_checkpoint(d)
    assert not os.path.exists("/tmp/semid-pickle-was-executed")
    torch.save({"w": torch.zeros(2)}, d / "model.safetensors")  # a torch zip pickle
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        read_checkpoint(d)


def test_a_pickle_file_given_as_the_checkpoint_is_refused(tmp_path):
    f = tmp_path / "model.pt"
    f.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match="expected a directory"):
        read_checkpoint(f)


def test_digest_mismatch_is_refused(tiny_checkpoint, tmp_path):
    d = tampered_copy(tiny_checkpoint, tmp_path / "tampered")
    with pytest.raises(CheckpointError, match="sha256 expected"):
        read_checkpoint(d)


def test_missing_files_are_named(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="model.safetensors missing"):
        read_checkpoint(tmp_path)
