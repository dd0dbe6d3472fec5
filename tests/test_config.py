import pytest

from semid_udf.config import JobConfig, load_config, parse_override, reference_rows
from semid_udf.errors import ConfigError


def test_defaults_are_the_contract_defaults():
    cfg = load_config()
    assert (cfg.model.levels, cfg.model.codebook_size, cfg.model.latent_dim) == (4, 256, 32)
    assert (cfg.input.id_col, cfg.input.embedding_col) == ("item_id", "embedding")


def test_cli_beats_yaml_beats_defaults(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  levels: 3\n  codebook_size: 128\ntrain:\n  epochs: 2\nspark:\n  spark.driver.memory: 2g\n")
    cfg = load_config(f, ["model.levels=5", "spark.spark.sql.shuffle.partitions=4"])
    assert cfg.model.levels == 5  # CLI
    assert cfg.model.codebook_size == 128  # YAML
    assert cfg.model.latent_dim == 32  # default
    assert cfg.spark == {"spark.driver.memory": "2g", "spark.sql.shuffle.partitions": "4"}


def test_unknown_key_lists_the_valid_keys(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(None, ["model.level=3"])
    msg = str(e.value)
    assert "model.level" in msg and "levels" in msg and "codebook_size" in msg


def test_unknown_section_lists_sections():
    with pytest.raises(ConfigError, match="valid sections: model, train"):
        load_config(None, ["modle.levels=3"])


@pytest.mark.parametrize("override, needle", [
    ("model.levels=four", "expected int, got str"),
    ("model.levels=2.5", "expected int, got float"),
    ("train.lr=fast", "expected float"),
    ("input.cast_double=3", "expected bool"),
    ("model.hidden_dims=[64, x]", "model.hidden_dims[1]"),
    ("encode.device=tpu", "expected one of auto, cpu, cuda"),
    ("output.mode=upsert", "expected one of full, append"),
    ("model.levels=0", "expected a positive integer, got 0"),
])
def test_wrong_types_and_values_are_named(override, needle):
    with pytest.raises(ConfigError, match=None) as e:
        load_config(None, [override])
    assert needle in str(e.value)


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("levels")
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("levels=3")


def test_yaml_lists_become_tuples_and_config_is_frozen():
    cfg = load_config(None, ["model.hidden_dims=[64, 32]"])
    assert cfg.model.hidden_dims == (64, 32)
    with pytest.raises(Exception):
        cfg.model.levels = 2  # type: ignore[misc]


def test_reference_covers_every_key():
    keys = {k for k, _, _ in reference_rows()}
    assert "model.codebook_size" in keys and "encode.micro_batch" in keys and "output.mode" in keys
    assert len(keys) == len(reference_rows())
    assert isinstance(JobConfig().validate(), JobConfig)


@pytest.mark.parametrize("typed", ["1", "yes", "null", "on", "", "sem_ids", "-1", "[0]", "1.5"])
def test_a_string_key_takes_the_text_as_typed(typed):
    """``--set plugin.output=1`` selects element "1"; YAML would have made it int 1 (refused),
    ``yes``/``on`` True and ``null`` None."""
    assert parse_override(f"plugin.output={typed}") == {"plugin": {"output": typed}}
    assert load_config(None, [f"plugin.output={typed}"]).plugin.output == typed


def test_non_string_keys_still_parse_as_yaml():
    cfg = load_config(None, ["model.levels=3", "input.cast_double=no", "model.hidden_dims=[64, 32]",
                             "train.lr=0.01", "output.max_reject_rate=1"])
    assert cfg.model.levels == 3 and cfg.input.cast_double is False and cfg.model.hidden_dims == (64, 32)
    assert cfg.train.lr == 0.01 and cfg.output.max_reject_rate == 1.0
    with pytest.raises(ConfigError, match="unknown key plugin.outptu; valid keys: factory, method, layout, output"):
        load_config(None, ["plugin.outptu=1"])


def test_semids_sessions_turn_columnar_udf_input_off_unless_the_user_says_otherwise(tmp_path):
    """The faster hand-off to Arrow UDFs (bench/RESULTS.md) is a default: a config's ``spark:``
    value or spark-submit's --conf wins."""
    from semid_udf.spark.session import local_settings

    key = "spark.sql.execution.arrow.pythonUDF.columnarInput.enabled"
    assert local_settings({}, None, {})[key] == "false"
    assert local_settings({key: "true"}, None, {})[key] == "true"  # the config's spark: section
    assert key not in local_settings({}, None, {key: "true"})  # spark-submit gave it: the JVM has it already
