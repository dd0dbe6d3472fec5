"""semid-import without Spark: weights read safely, the probe refuses unstable or out-of-range
codes, every adapter layout imports, and the checkpoint runs as the model itself does."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import save_file

from semid_udf.model.checkpoint import read_checkpoint
from semid_udf.config import EncodeConfig, PluginConfig
from semid_udf.model.encode import CodeEncoder, effective_plugin, load_plugin
from semid_udf.errors import AdapterError, CheckpointError, CodeValueError, ConfigError, InputError
from semid_udf.model.importer import (Sample, import_rqvae, load_weights, normal_sample, probe_batch_sizes,
                                read_sample)

from .conftest import ROOT

D, L, K = 8, 3, 16
BIN = Path(sys.executable).parent
EXAMPLE = ROOT / "examples" / "byo_rqvae"
FAST = {"sample_rows": 256}  # the probe on 256 rows: batches of 256 and 7


# --- a small user model with one method per output layout --------------------------------------


def toy_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"proj": torch.randn(D, 4, generator=g), "codebooks": torch.randn(L, K, 4, generator=g)}


class ToyRQ(torch.nn.Module):
    def __init__(self, proj: torch.Tensor, codebooks: torch.Tensor):
        super().__init__()
        self.register_buffer("proj", proj)
        self.register_buffer("codebooks", codebooks)
        self.calls = 0

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The model's own codes, LongTensor[batch, levels]: residual nearest codewords."""
        r, out = x @ self.proj, []
        for cb in self.codebooks:
            i = torch.cdist(r, cb).argmin(1)
            out.append(i)
            r = r - cb[i]
        return torch.stack(out, 1)

    def batch_major(self, x):
        return self.codes(x)

    def level_major(self, x):
        return self.codes(x).T.contiguous()

    def per_item(self, x):
        return list(self.codes(x))

    def per_level(self, x):
        return [c for c in self.codes(x).T]

    def packed(self, x):
        return self.codes(x).to(torch.uint8).numpy().tobytes()

    def packed_uint8(self, x):
        return self.codes(x).to(torch.uint8).reshape(-1)  # 1-D: only a declared layout reads it

    def as_tuple(self, x):
        return x, self.codes(x)

    def as_dict(self, x):
        return {"recon": x, "sem_ids": self.codes(x)}

    def latent(self, x):
        return x @ self.proj

    def batch_dependent(self, x):  # centred on the batch mean: an item's codes depend on its neighbours
        return self.codes(x - x.mean(0, keepdim=True))

    def drifting(self, x):  # state updated by every call
        self.calls += 1
        return (self.codes(x) + self.calls) % K

    def out_of_range(self, x):
        c = self.codes(x)
        c[x[:, 0] > 2.0, 2] = K
        return c


SEEN_CONFIGS: list[dict] = []


def build_toy(config, tensors):
    SEEN_CONFIGS.append(config)
    assert config["model"] == {"input_dim": D, "levels": L, "codebook_size": K}
    return ToyRQ(tensors["proj"], tensors["codebooks"])


FACTORY = "tests.test_import:build_toy"


def own_codes(x: np.ndarray, tensors=None) -> np.ndarray:
    t = tensors or toy_tensors()
    with torch.inference_mode():
        return ToyRQ(t["proj"], t["codebooks"]).codes(torch.from_numpy(x)).numpy()


def fresh(n: int = 300, seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, D), dtype=np.float32)


def run_checkpoint(ck: Path, x: np.ndarray, plugin: PluginConfig | None = None) -> np.ndarray:
    """Codes as semid-assign computes them: read_checkpoint, the CodeEncoder, no plugin settings."""
    return CodeEncoder(read_checkpoint(ck), EncodeConfig(micro_batch=64), plugin or PluginConfig())(x)


def do_import(weights, ck, method="batch_major", **kw):
    kw = {**FAST, **kw}
    return import_rqvae(weights, kw.pop("factory", FACTORY), ck, input_dim=D, levels=L, codebook_size=K,
                        method=method, **kw)


@pytest.fixture
def state_dict_pt(tmp_path) -> Path:
    p = tmp_path / "model.pt"
    torch.save(toy_tensors(), p)
    return p


# --- weights ---------------------------------------------------------------------------------


def test_a_pt_state_dict_imports_and_runs_as_the_model(state_dict_pt, tmp_path):
    res = do_import(state_dict_pt, tmp_path / "ck")
    cfg = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert cfg["plugin"] == {"factory": FACTORY, "method": "batch_major", "layout": "batch_major", "output": ""}
    assert cfg["model"] == {"input_dim": D, "levels": L, "codebook_size": K}
    assert cfg["model_version"] == res.model_version == read_checkpoint(tmp_path / "ck").model_version
    x = fresh()
    np.testing.assert_array_equal(run_checkpoint(tmp_path / "ck", x), own_codes(x))
    # the factory saw config.json's content, as plugin.factory does at run time
    assert SEEN_CONFIGS[-1]["plugin"]["factory"] == FACTORY


def test_a_training_checkpoint_needs_key_and_a_missing_key_lists_the_keys(tmp_path):
    p = tmp_path / "train.pth"
    m = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(m.parameters())
    torch.save({"model": toy_tensors(), "optimizer": opt.state_dict(), "epoch": 7}, p)
    with pytest.raises(CheckpointError, match=r"pick the state dict with --key .*\['model', 'optimizer'\]"):
        load_weights(p)
    with pytest.raises(CheckpointError, match=r"key 'state_dict' not found; keys: \['epoch', 'model', 'optimizer'\]"):
        load_weights(p, "state_dict")
    with pytest.raises(CheckpointError, match=r"\['epoch'\]: expected a dict of tensors.*got int"):
        load_weights(p, "epoch")
    do_import(p, tmp_path / "ck", key="model")
    x = fresh()
    np.testing.assert_array_equal(run_checkpoint(tmp_path / "ck", x), own_codes(x))
    assert json.loads((tmp_path / "ck" / "config.json").read_text())["training"]["imported_from"]["key"] == "model"


def test_a_safetensors_file_imports_as_is(tmp_path):
    p = tmp_path / "model.safetensors"
    save_file(toy_tensors(), p)
    do_import(p, tmp_path / "ck")
    x = fresh()
    np.testing.assert_array_equal(run_checkpoint(tmp_path / "ck", x), own_codes(x))


def test_the_same_weights_give_the_same_tensors_from_pt_and_safetensors(state_dict_pt, tmp_path):
    save_file(toy_tensors(), tmp_path / "m.safetensors")
    a, b = load_weights(state_dict_pt), load_weights(tmp_path / "m.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class _Payload:
    """Unpickling this would run os.makedirs(marker): the test proves it never runs."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


@pytest.mark.parametrize("how", ["torch.save", "pickle.dumps", "named .safetensors"])
def test_a_pickle_with_code_is_refused_and_never_unpickled(tmp_path, how):
    marker = tmp_path / "the-pickle-ran"
    payload = {**toy_tensors(), "extra": _Payload(str(marker))}
    p = tmp_path / ("model.safetensors" if how == "named .safetensors" else "model.pt")
    if how == "torch.save":
        torch.save(payload, p)
    else:
        p.write_bytes(pickle.dumps(payload))
    with pytest.raises(CheckpointError) as e:
        do_import(p, tmp_path / "ck")
    msg = str(e.value)
    if how == "named .safetensors":
        assert "not a safetensors file" in msg and "refusing to load it" in msg
    else:
        assert "refused" in msg and "never unpickles" in msg and str(p) in msg
    if how == "torch.save":
        assert "os.makedirs" in msg  # names what the file wanted to run
    assert not marker.exists()
    assert not (tmp_path / "ck").exists()


def test_other_files_are_named(tmp_path):
    (tmp_path / "m.ckpt").write_bytes(b"x" * 20)
    with pytest.raises(CheckpointError, match=r"expected a file ending in \.pt, \.pth, \.bin, \.safetensors"):
        load_weights(tmp_path / "m.ckpt")
    (tmp_path / "junk.bin").write_bytes(b"not a torch file at all")
    with pytest.raises(CheckpointError, match="junk.bin"):
        load_weights(tmp_path / "junk.bin")
    with pytest.raises(CheckpointError, match="expected a file, got nothing"):
        load_weights(tmp_path / "absent.pt")
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="expected a dict of tensors .* got list"):
        load_weights(tmp_path / "list.pt")


# --- the probe -------------------------------------------------------------------------------


def write_sample(path: Path, x: np.ndarray, first_id: int = 1000, emb_type=None) -> Path:
    emb_type = emb_type or pa.list_(pa.float32())
    rows = [list(map(float, v)) for v in x]
    pq.write_table(pa.table({"item_id": pa.array(range(first_id, first_id + len(x)), pa.int64()),
                             "embedding": pa.array(rows, emb_type)}), path)
    return path


def test_batch_dependent_codes_are_refused_naming_item_and_level(state_dict_pt, tmp_path):
    sample = read_sample(write_sample(tmp_path / "s.parquet", fresh(300, seed=1)), D)
    with pytest.raises(AdapterError) as e:
        do_import(state_dict_pt, tmp_path / "ck", method="batch_dependent", sample=sample)
    msg = str(e.value)
    assert "codes depend on the batch" in msg
    first = own_codes_batch_dependent_first_difference(sample)
    assert f"item {first[0]} (sample row {first[0] - 1000}), level {first[1]}:" in msg
    assert "in batches of 300 rows" in msg and "in batches of 7 rows" in msg
    assert not (tmp_path / "ck").exists()  # nothing written


def own_codes_batch_dependent_first_difference(sample: Sample) -> tuple[int, int]:
    """Where batches of the whole sample and of 7 rows first disagree, computed independently."""
    m = build_toy({"model": {"input_dim": D, "levels": L, "codebook_size": K}}, toy_tensors())
    x = torch.from_numpy(sample.x)
    whole = m.batch_dependent(x).numpy()
    small = np.concatenate([m.batch_dependent(c).numpy() for c in x.split(7)])
    diff = whole != small
    row = int(np.argmax(diff.any(1)))
    return sample.ids[row], int(np.argmax(diff[row]))


def test_codes_that_change_between_calls_are_refused(state_dict_pt, tmp_path):
    with pytest.raises(AdapterError, match=r"codes change between calls: sample row 0, level \d: code \d+ on the "
                                           r"first call and \d+ on the second \(batches of 256 rows\); 256 of 256"):
        do_import(state_dict_pt, tmp_path / "ck", method="drifting")
    assert not (tmp_path / "ck").exists()


def test_codes_out_of_range_are_refused(state_dict_pt, tmp_path):
    sample = read_sample(write_sample(tmp_path / "s.parquet", fresh(300, seed=2)), D)
    first = int(np.argmax(sample.x[:, 0] > 2.0))
    with pytest.raises(CodeValueError) as e:
        do_import(state_dict_pt, tmp_path / "ck", method="out_of_range", sample=sample)
    msg = str(e.value)
    assert f"item {1000 + first} (row {first}), level 2: expected a code in [0, 16), got 16" in msg
    assert "call 1 in batches of 300 rows" in msg
    assert not (tmp_path / "ck").exists()


def test_a_method_returning_floats_is_named(state_dict_pt, tmp_path):
    with pytest.raises(CodeValueError, match="expected integer codes.*does --method latent return the codes"):
        do_import(state_dict_pt, tmp_path / "ck", method="latent")
    with pytest.raises(ConfigError, match=r"has no callable 'nope'; callables: \[.*'batch_major'"):
        do_import(state_dict_pt, tmp_path / "ck", method="nope")


CASES = [  # method, output, layout detected (None: cannot be detected, must be declared)
    ("batch_major", "", "batch_major"),
    ("level_major", "", "level_major"),
    ("per_item", "", "per_item"),
    ("per_level", "", "per_level"),
    ("packed", "", "packed"),
    ("packed_uint8", "", None),
    ("as_tuple", "1", "batch_major"),
    ("as_dict", "sem_ids", "batch_major"),
]


@pytest.mark.parametrize("method, output, detected", CASES, ids=[c[0] for c in CASES])
def test_every_layout_imports_detected_or_declared(state_dict_pt, tmp_path, method, output, detected):
    declared = detected or "packed"
    x = fresh()
    for layout in ("auto", declared):
        ck = tmp_path / layout
        if layout == "auto" and detected is None:
            with pytest.raises(AdapterError, match="declare the layout with --layout"):
                do_import(state_dict_pt, ck, method=method, output=output, layout="auto")
            continue
        do_import(state_dict_pt, ck, method=method, output=output, layout=layout)
        cfg = json.loads((ck / "config.json").read_text())
        assert cfg["plugin"] == {"factory": FACTORY, "method": method, "layout": declared, "output": output}
        assert cfg["probe"]["layout"] == declared and cfg["probe"]["layout_detected"] is (layout == "auto")
        np.testing.assert_array_equal(run_checkpoint(ck, x), own_codes(x))


def test_probe_figures_are_stored(state_dict_pt, tmp_path):
    res = import_rqvae(state_dict_pt, FACTORY, tmp_path / "ck", input_dim=D, levels=L, codebook_size=K,
                       method="batch_major", seed=4)
    probe = json.loads((tmp_path / "ck" / "config.json").read_text())["probe"]
    assert probe == res.probe
    codes = own_codes(normal_sample(2048, D, seed=4).x)
    _, counts = np.unique(codes, axis=0, return_counts=True)
    assert probe["rows"] == 2048 and probe["batch_sizes"] == [1024, 7] and probe["calls_per_batch_size"] == 2
    assert probe["codes_used_per_level"] == [len(np.unique(codes[:, lv])) for lv in range(L)]
    assert probe["utilisation_per_level"] == [round(len(np.unique(codes[:, lv])) / K, 4) for lv in range(L)]
    assert probe["unique_rate"] == round(len(counts) / 2048, 4)
    assert probe["largest_bucket"] == int(counts.max())
    assert probe["sample"].startswith("seeded normal sample (seed 4")


@pytest.mark.parametrize("levels, rows, expected", [(3, 2048, (1024, 7)), (7, 2048, (1024, 5)),
                                                    (1024, 4096, (1023, 7)), (4, 100, (100, 7)),
                                                    (100, 100, (99, 7))])
def test_probe_batch_sizes_differ_from_each_other_and_from_levels(levels, rows, expected):
    large, small = probe_batch_sizes(levels, rows)
    assert (large, small) == expected
    assert len({large, small, levels}) == 3


def test_versions_cover_the_weights_and_the_plugin_section(state_dict_pt, tmp_path):
    a = do_import(state_dict_pt, tmp_path / "a").model_version
    again = do_import(state_dict_pt, tmp_path / "again", seed=9).model_version  # another probe sample
    other_method = do_import(state_dict_pt, tmp_path / "m", method="as_tuple", output="1").model_version
    other_output = do_import(state_dict_pt, tmp_path / "o", method="as_tuple", output="-1").model_version
    torch.save(toy_tensors(seed=1), tmp_path / "other.pt")
    other_weights = do_import(tmp_path / "other.pt", tmp_path / "w").model_version
    assert a == again
    assert len({a, other_method, other_output, other_weights}) == 4
    assert do_import(state_dict_pt, tmp_path / "e", model_version="prod-1").model_version == "prod-1"
    # a tampered plugin section no longer matches the version derived from it
    cfg_path = tmp_path / "a" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["plugin"]["method"] = "level_major"
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="model_version expected"):
        read_checkpoint(tmp_path / "a")


# --- samples ---------------------------------------------------------------------------------


@pytest.mark.parametrize("emb_type", [pa.list_(pa.float32()), pa.list_(pa.float64()), pa.large_list(pa.float32()),
                                      pa.list_(pa.float32(), D)], ids=["float", "double", "large", "fixed"])
def test_read_sample_accepts_float_and_double_lists(tmp_path, emb_type):
    x = fresh(100)
    s = read_sample(write_sample(tmp_path / "s.parquet", x, emb_type=emb_type), D, rows=80)
    assert s.x.dtype == np.float32 and s.x.shape == (80, D) and s.ids == list(range(1000, 1080))
    np.testing.assert_array_equal(s.x, x[:80])


def test_read_sample_leaves_out_rows_the_job_rejects_and_counts_them(tmp_path):
    x = fresh(100)
    rows: list = [list(map(float, v)) for v in x]
    rows[0] = None
    rows[1] = rows[1][:-1]
    rows[2] = [float("nan")] + rows[2][1:]
    rows[3] = [None] + rows[3][1:]
    ids = list(range(100))
    ids[4] = None
    d = tmp_path / "dir"
    d.mkdir()
    pq.write_table(pa.table({"item_id": pa.array(ids, pa.int64()), "embedding": pa.array(rows, pa.list_(pa.float32()))}),
                   d / "part-0.parquet")
    s = read_sample(d, D, rows=90)
    # the job's own reasons (the rejects table's), counted as the job counts them
    assert s.skipped == {"non_finite": 1, "null_element": 1, "null_embedding": 1, "null_item_id": 1, "wrong_length": 1}
    assert s.ids == list(range(5, 95))
    np.testing.assert_array_equal(s.x, x[5:95])


def test_read_sample_errors_name_columns_and_lengths(tmp_path):
    p = write_sample(tmp_path / "s.parquet", fresh(100))
    with pytest.raises(InputError, match=r"column\(s\) \['vec'\] missing; columns: \['item_id', 'embedding'\]"):
        read_sample(p, D, embedding_col="vec")
    with pytest.raises(InputError, match=r"no usable row of 100 read \(left out by reason: \{'wrong_length': 100\}\); "
                                         r"e.g. row 0: embedding: expected length 9, got 8"):
        read_sample(p, 9)
    with pytest.raises(InputError, match="expected at least 64 usable rows, got 10"):
        read_sample(write_sample(tmp_path / "small.parquet", fresh(10)), D)


# --- run time: the recorded plugin section, and modules the workers cannot import ------------


def test_effective_plugin_uses_the_recorded_section_and_refuses_contradictions(state_dict_pt, tmp_path):
    do_import(state_dict_pt, tmp_path / "ck", method="as_dict", output="sem_ids")
    blob = read_checkpoint(tmp_path / "ck")
    recorded = PluginConfig(factory=FACTORY, method="as_dict", layout="batch_major", output="sem_ids")
    assert effective_plugin(blob, PluginConfig()) == recorded
    assert effective_plugin(blob, recorded) == recorded
    assert effective_plugin(blob, PluginConfig(method="as_dict")) == recorded  # agrees: fine
    with pytest.raises(ConfigError, match=r"plugin.factory: checkpoint 'tests.test_import:build_toy', config 'x:y'"):
        effective_plugin(blob, PluginConfig(factory="x:y", method="as_dict", output="sem_ids"))
    with pytest.raises(ConfigError, match=r"plugin.output: checkpoint 'sem_ids', config 'recon'"):
        effective_plugin(blob, PluginConfig(output="recon"))
    assert effective_plugin(read_checkpoint_of_semid(), PluginConfig()) == PluginConfig()


def read_checkpoint_of_semid():
    from semid_udf.model.checkpoint import CheckpointBlob

    return CheckpointBlob(config={"model": {}, "model_version": "x"}, weights=b"")


def test_a_module_that_cannot_be_imported_names_itself_and_how_to_ship_it():
    with pytest.raises(ConfigError) as e:
        load_plugin("no_such_rqvae_module:build")
    msg = str(e.value)
    assert "\n" not in msg
    for needle in ("cannot import module 'no_such_rqvae_module'", "wheel", "--archives", "--py-files",
                   "spark.addArtifacts(FILE.py, pyfile=True)"):
        assert needle in msg, needle


# --- the example, in process (the Spark run of it is tests/test_import_e2e.py) ---------------


@pytest.fixture
def example(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    for name in ("rqvae", "rqvae_batch_dependent", "train"):
        sys.modules.pop(name, None)
    import train

    x = train.catalogue(1500, seed=3)
    model, opt = train.train(x, epochs=1)
    p = tmp_path / "model.pt"
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 1}, p)
    yield p, model, x
    for name in ("rqvae", "rqvae_batch_dependent", "train"):
        sys.modules.pop(name, None)


def test_the_example_imports_and_its_batch_dependent_variant_is_refused(example, tmp_path):
    p, model, x = example
    sample = Sample(x=x[:512], ids=list(range(512)), source="the catalogue", skipped={})
    args = dict(input_dim=x.shape[1], levels=3, codebook_size=32, method="get_codes", key="model", sample=sample)
    import_rqvae(p, "rqvae:build", tmp_path / "ck", **args)
    with torch.inference_mode():
        np.testing.assert_array_equal(run_checkpoint(tmp_path / "ck", x), model.get_codes(torch.from_numpy(x)).numpy())
    with pytest.raises(AdapterError, match=r"codes depend on the batch: item \d+ \(sample row \d+\), level \d"):
        import_rqvae(p, "rqvae_batch_dependent:build", tmp_path / "bad", **args)
    assert not (tmp_path / "bad").exists()


def test_the_cli_exits_2_with_one_line_and_prints_a_summary(state_dict_pt, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    base = [str(BIN / "semid-import"), "--factory", FACTORY, "--method", "per_level", "--input-dim", str(D),
            "--levels", str(L), "--codebook-size", str(K), "--sample-rows", "128", "-q"]
    ok = subprocess.run([*base, "--weights", str(state_dict_pt), "--checkpoint", str(tmp_path / "ck")],
                        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert "semid-import: checkpoint" in ok.stdout and "per_level (detected)" in ok.stdout
    marker = tmp_path / "ran"
    torch.save({"w": torch.zeros(1), "x": _Payload(str(marker))}, tmp_path / "evil.pt")
    bad = subprocess.run([*base, "--weights", str(tmp_path / "evil.pt"), "--checkpoint", str(tmp_path / "ck2")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("semid-import: error: weights") and "refused" in lines[0]
    assert not marker.exists() and not (tmp_path / "ck2").exists()


def test_a_sample_too_small_to_tell_batches_apart_is_refused(state_dict_pt, tmp_path):
    small = Sample(x=fresh(20), ids=None, source="twenty rows", skipped={})
    with pytest.raises(InputError, match="expected at least 64 rows, got 20"):
        do_import(state_dict_pt, tmp_path / "ck", sample=small)
    with pytest.raises(ConfigError, match="expected at least 64, got 10"):
        do_import(state_dict_pt, tmp_path / "ck", sample_rows=10)


def build_toy_strictly(config, tensors):
    """A factory as users write them: load_state_dict(strict=True) into the model it builds."""
    model = ToyRQ(torch.zeros(D, 4), torch.zeros(L, K, 4))
    model.load_state_dict(tensors, strict=True)
    return model


def test_weights_that_do_not_fit_the_factorys_model_are_listed_in_one_line(tmp_path):
    bad = toy_tensors()
    bad["codebooks"] = bad["codebooks"][:, :, :3]  # another shape
    bad["extra.weight"] = torch.zeros(2)
    del bad["proj"]
    p = tmp_path / "bad.pt"
    torch.save(bad, p)
    with pytest.raises(CheckpointError) as e:
        do_import(p, tmp_path / "ck", factory="tests.test_import:build_toy_strictly")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("plugin.factory tests.test_import:build_toy_strictly: building the model")
    assert 'Missing key(s) in state_dict: "proj"' in msg and 'Unexpected key(s) in state_dict: "extra.weight"' in msg
    assert "size mismatch for codebooks: copying a param with shape torch.Size([3, 16, 3])" in msg
    assert not (tmp_path / "ck").exists()
