"""Config validation: unknown keys suggest the nearest valid key, out-of-range values name the range."""

import pytest

from av_td3.config import Config, ConfigError, load_config


def test_defaults_have_seed_values():
    cfg = Config.from_any(None)
    assert cfg.networks.cnn.learning_rate == 1e-4
    assert cfg.networks.actor.hidden_layers == [256, 256]
    assert cfg.networks.critic.learning_rate == 3e-4
    assert cfg.algorithm.policy_freq == 2


def test_unknown_key_suggests_nearest():
    with pytest.raises(ConfigError) as err:
        Config.from_any({"algorithm": {"batch_sise": 64}})
    assert "algorithm.batch_sise" in str(err.value)
    assert "did you mean 'algorithm.batch_size'" in str(err.value)


def test_unknown_section_suggests_nearest():
    with pytest.raises(ConfigError, match="did you mean 'networks'"):
        Config.from_any({"netwrks": {}})


@pytest.mark.parametrize(
    "raw, needle",
    [
        ({"env": {"scenario": 3}}, "env.scenario"),
        ({"networks": {"cnn": {"learning_rate": -0.1}}}, "allowed: > 0"),
        ({"algorithm": {"batch_size": 512}, "training": {"buffer_size": 100}}, "batch_size <= buffer_size"),
        ({"networks": {"actor": {"hidden_layers": [256, 0]}}}, "positive widths"),
    ],
)
def test_out_of_range_values_name_the_range(raw, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        Config.from_any(raw)


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("algorithm:\n  batch_size: 64\nnetworks:\n  actor:\n    hidden_layers: [32, 32]\n")
    cfg = load_config(path, ["algorithm.n_step=1", "networks.critic.hidden_layers=[16,16]", "env.route=random"])
    assert cfg.algorithm.batch_size == 64
    assert cfg.algorithm.n_step == 1
    assert cfg.networks.actor.hidden_layers == [32, 32]
    assert cfg.networks.critic.hidden_layers == [16, 16]
    assert cfg.env.route == "random"


def test_override_typo_is_an_error():
    with pytest.raises(ConfigError, match="did you mean 'training.max_timesteps'"):
        load_config(None, ["training.max_timestep=5"])


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_config(bad)


def test_shipped_configs_validate():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs"
    # sweep_*.yaml are sweep files, not configs (validated in test_sweep_spec.py)
    files = sorted(p for p in root.glob("*.yaml") if not p.name.startswith("sweep_"))
    assert files, "configs/*.yaml missing"
    for f in files:
        load_config(f)


def test_root_composes_exactly_the_section_names_parts_accept():
    from av_td3.config_base import SECTION_NAMES

    assert tuple(Config.model_fields) == SECTION_NAMES


def test_each_part_takes_its_own_sections_from_the_root_or_a_dict():
    """The env, agent and classical views share the root's section objects, validate a nested dict with the
    same error wording, leave other parts' sections alone and reject a key that is no section at all."""
    from av_td3.agents.config import AgentConfig
    from av_td3.baselines.config import ClassicalSections
    from av_td3.envs.carla.config import CarlaSections
    from av_td3.envs.sections import DrivingSections, resolve_sections

    cfg = Config.from_any({"env": {"npc_count": 3}, "algorithm": {"batch_size": 32}})
    assert DrivingSections.from_any(cfg).env is cfg.env and CarlaSections.from_any(cfg).carla is cfg.carla
    assert AgentConfig.from_any(cfg).algorithm is cfg.algorithm and ClassicalSections.from_any(cfg).classical is cfg.classical
    assert DrivingSections.from_any(cfg.to_dict()).env == cfg.env  # the whole saved config is accepted
    assert AgentConfig.from_any({"algorithm": {"batch_size": 8}}).algorithm.batch_size == 8
    with pytest.raises(ConfigError, match=r"unknown config key 'algoritm' did you mean 'algorithm'\?"):
        DrivingSections.from_any({"algoritm": {}})
    with pytest.raises(ConfigError, match=r"did you mean 'env.npc_count'.*valid keys in env:"):
        DrivingSections.from_any({"env": {"npc_cont": 3}})
    with pytest.raises(ConfigError, match=r"'reward.goal_bonus'.*allowed: >= 0"):
        DrivingSections.from_any({"reward": {"goal_bonus": -1}})
    with pytest.raises(ConfigError, match="batch_size <= buffer_size"):
        AgentConfig.from_any({"training": {"buffer_size": 4}})
    merged = resolve_sections(DrivingSections, cfg, {"route": "default"}, owner="TownEnv")
    assert (merged.env.route, merged.env.npc_count, cfg.env.route) == ("default", 3, "random")
    with pytest.raises(TypeError, match=r"TownEnv got unknown argument\(s\) \['rout'\]"):
        resolve_sections(DrivingSections, cfg, {"rout": "default"}, owner="TownEnv")
