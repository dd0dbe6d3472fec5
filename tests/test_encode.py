"""The pure encode function: codes never depend on slicing, batch size or threads."""
import numpy as np
import pytest
import torch

from semid_udf.model.checkpoint import build_model
from semid_udf.config import EncodeConfig, PluginConfig
from semid_udf.model.encode import CodeEncoder, resolve_device
from semid_udf.errors import ConfigError, InputError
from semid_udf.model.coder import ResidualQuantizer

from .conftest import clustered


@pytest.fixture(scope="module")
def x():
    return clustered(3000, 16, seed=5)


def test_codes_do_not_depend_on_slicing(tiny_blob, x):
    enc = CodeEncoder(tiny_blob, EncodeConfig(micro_batch=256), PluginConfig())
    whole = enc(x)
    assert whole.dtype == np.int32 and whole.shape == (3000, 3)
    assert whole.min() >= 0 and whole.max() < 16
    for size in (1, 3, 7, 100, 1000, 2999):
        parts = np.concatenate([enc(x[i:i + size]) for i in range(0, len(x), size)])
        np.testing.assert_array_equal(parts, whole, err_msg=f"slices of {size}")


def test_codes_equal_the_model_on_full_batches(tiny_blob, x):
    enc = CodeEncoder(tiny_blob, EncodeConfig(micro_batch=1000), PluginConfig())
    model = build_model(tiny_blob)
    direct = np.concatenate([model.encode(torch.from_numpy(x[i:i + 1000])).numpy() for i in range(0, 3000, 1000)])
    np.testing.assert_array_equal(enc(x), direct)


def test_codes_do_not_depend_on_threads_or_micro_batch(tiny_blob, x):
    base = CodeEncoder(tiny_blob, EncodeConfig(micro_batch=512, threads=1), PluginConfig())(x)
    two = CodeEncoder(tiny_blob, EncodeConfig(micro_batch=512, threads=2), PluginConfig())(x)
    np.testing.assert_array_equal(base, two)
    torch.set_num_threads(1)


def test_nan_never_reaches_the_model(tiny_blob, x):
    enc = CodeEncoder(tiny_blob, EncodeConfig(), PluginConfig())
    bad = x[:10].copy()
    bad[4, 2] = np.nan
    with pytest.raises(InputError, match="item 'i4' has NaN/Inf"):
        enc(bad, item_ids=[f"i{i}" for i in range(10)])
    with pytest.raises(InputError, match=r"expected shape \[n, 16\], got \[10, 15\]"):
        enc(x[:10, :15].copy())


def test_ties_go_to_the_lowest_index():
    cb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    r = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    assert ResidualQuantizer.nearest(r, cb).tolist() == [0, 1, 0]


def test_device_resolution(monkeypatch):
    assert resolve_device("cpu").type == "cpu"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    if not torch.cuda.is_available():
        assert resolve_device("auto", task_gpus=["0"]).type == "cpu"
        with pytest.raises(ConfigError, match="expected a CUDA device, got none"):
            resolve_device("cuda")


class PerLevelModel(torch.nn.Module):
    """A user's own RQ-VAE returning (recon, per-level list of code vectors)."""

    def __init__(self, codebooks):
        super().__init__()
        self.register_buffer("cb", codebooks)

    def semantic_ids(self, x):
        codes = ResidualQuantizer.nearest(x[:, :2], self.cb)
        return x, [codes, (codes + 1) % 4]


def make_plugin(config, tensors):
    return PerLevelModel(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]))


def test_a_users_own_model_through_the_adapter(tiny_blob, monkeypatch):
    from semid_udf.model.checkpoint import CheckpointBlob

    cfg = dict(tiny_blob.config, model=dict(tiny_blob.model, input_dim=2, levels=2, codebook_size=4))
    blob = CheckpointBlob(config=cfg, weights=tiny_blob.weights)
    plugin = PluginConfig(factory="tests.test_encode:make_plugin", method="semantic_ids", layout="auto", output="1")
    enc = CodeEncoder(blob, EncodeConfig(micro_batch=8), plugin)
    x = np.array([[1, 0], [0, 1], [-1, 0], [0, -1], [0.9, 0.1]], dtype=np.float32)
    np.testing.assert_array_equal(enc(x), [[0, 1], [1, 2], [2, 3], [3, 0], [0, 1]])
    with pytest.raises(ConfigError, match="has no attribute 'nope'"):
        CodeEncoder(blob, EncodeConfig(), PluginConfig(factory="tests.test_encode:nope"))
