"""Training: usable codes, determinism for a seed."""
import numpy as np

from semid_udf.checkpoint import save_checkpoint
from semid_udf.config import ModelConfig, TrainConfig
from semid_udf.train import fit, utilisation

from .conftest import clustered

MODEL = ModelConfig(hidden_dims=(32,), latent_dim=8, levels=2, codebook_size=16)
TRAIN = TrainConfig(epochs=2, batch_size=128, kmeans_iters=3, seed=11, threads=1)


def test_same_seed_same_checkpoint_version(tmp_path):
    x = clustered(1000, 12, seed=3)
    v = [save_checkpoint(fit(x, MODEL, TRAIN)[0], ModelConfig(**{**MODEL.__dict__, "input_dim": 12}), tmp_path / str(i))
         for i in range(2)]
    assert v[0] == v[1]
    other = save_checkpoint(fit(x, MODEL, TrainConfig(**{**TRAIN.__dict__, "seed": 12}))[0],
                            ModelConfig(**{**MODEL.__dict__, "input_dim": 12}), tmp_path / "o")
    assert other != v[0]


def test_utilisation_on_a_hand_built_table():
    codes = np.array([[0, 1], [0, 2], [3, 2], [3, 2]])
    assert utilisation(codes, 4) == [0.5, 0.5]


def test_training_uses_the_codebooks():
    x = clustered(4000, 12, seed=8, centers=200)
    model, meta = fit(x, MODEL, TRAIN)
    assert min(meta["utilisation_per_level"]) > 0.9
    assert meta["unique_rate_on_sample"] * 4000 > 150  # distinct tuples, of 16 x 16 = 256 possible
