"""Config: shipped names, files, --set overrides and the errors a user meets."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from competition.config import ConfigLoader, load_config, shipped_configs
from competition.core.errors import CompetitionError
from competition.core.schema import Config, TrainConfig, build_config, config_to_dict, flat_config
from competition.training.stages import plan_stages


def test_shipped_configs_load_and_default_is_digits():
    assert {"digits", "titanic"} <= set(shipped_configs())
    assert load_config().name == "digits"  # no ./competition.yaml in the test's cwd
    titanic = load_config("titanic")
    assert titanic.task == "tabular" and titanic.data.id_column == "PassengerId"


def test_local_competition_yaml_is_the_default(tmp_path):
    (tmp_path / "competition.yaml").write_text("name: mine\ntrain: {lr: 0.01}\n")
    cfg = load_config()
    assert cfg.name == "mine" and cfg.train.lr == 0.01


def test_set_parses_yaml_scalars_and_lists():
    cfg = load_config(
        "digits",
        ["train.lr=3e-4", "model.pretrained_file=null", "predict.tta=[hflip, vflip]", "train.compile=true", "train.epochs=3"],
    )
    assert cfg.train.lr == pytest.approx(3e-4) and isinstance(cfg.train.lr, float)
    assert cfg.model.pretrained_file is None
    assert cfg.predict.tta == ["hflip", "vflip"]
    assert cfg.train.compile is True and cfg.train.epochs == 3


def test_off_and_on_are_words_not_booleans(tmp_path):
    """YAML 1.1 reads off/on/yes/no as booleans; the choices named off and on must stay words,
    in a file and in --set alike, while true and false stay booleans."""
    (tmp_path / "c.yaml").write_text("train: {cache: off, device_augment: on, amp: false}\ntracking: {wandb: off}\n")
    cfg = load_config(str(tmp_path / "c.yaml"))
    assert (cfg.train.cache, cfg.train.device_augment, cfg.train.amp, cfg.tracking.wandb) == ("off", "on", False, "off")
    cfg = load_config("digits", ["tracking.wandb=offline", "train.device_augment=off", "train.compile=True"])
    assert (cfg.tracking.wandb, cfg.train.device_augment, cfg.train.compile) == ("offline", "off", True)
    with pytest.raises(CompetitionError, match="tracking.wandb: 'yes' is not one of off, offline, online"):
        load_config("digits", ["tracking.wandb=yes"])


def test_config_is_frozen():
    cfg = load_config("digits")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.lr = 1.0  # type: ignore[misc]


def test_unknown_key_lists_valid_keys():
    with pytest.raises(CompetitionError, match=r"unknown config key train\.learning_rate: valid keys in section 'train' are .*\blr\b"):
        load_config("digits", ["train.learning_rate=0.1"])


def test_wrong_type_names_the_key():
    with pytest.raises(CompetitionError, match=r"config key train\.epochs: expected an integer, got 'many'"):
        load_config("digits", ["train.epochs=many"])
    with pytest.raises(CompetitionError, match=r"train\.lr"):
        load_config("digits", ["train.lr=fast"])


def test_bad_choice_lists_the_options():
    with pytest.raises(CompetitionError, match=r"train\.metric: 'auc' is not one of accuracy, f1_macro, f1, log_loss, roc_auc, f1_samples"):
        load_config("digits", ["train.metric=auc"])
    with pytest.raises(CompetitionError, match=r"folds\.strategy"):
        load_config("digits", ["folds.strategy=random"])


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(CompetitionError, match=r"config nope\.yaml not found"):
        load_config("nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {lr: [1, 2\n")
    with pytest.raises(CompetitionError, match=r"bad\.yaml is not valid YAML"):
        load_config(str(bad))


def test_group_strategy_needs_group_column():
    with pytest.raises(CompetitionError, match="data.group_column"):
        load_config("digits", ["folds.strategy=group"])


def test_a_sample_target_column_beside_class_columns_is_refused():
    with pytest.raises(CompetitionError, match="data.sample_target_column: with data.target_columns"):
        load_config("digits", ["data.target_format=multi_label", "folds.strategy=kfold", "train.metric=f1_samples",
                               "data.target_columns=[a, b]", "data.sample_target_column=tags"])


def test_image_patterns_are_for_image_tasks():
    with pytest.raises(CompetitionError, match="data.image_pattern / data.test_image_pattern: build image paths"):
        load_config("titanic", ["data.image_pattern=images/{PassengerId}.png"])


def test_on_off_and_yes_no_stay_words_not_booleans(tmp_path):
    # YAML 1.1 reads `on` as true: `device_augment: on` must stay the choice "on".
    cfg = load_config("digits", ["train.device_augment=on", "train.amp=false", "name=yes"])
    assert cfg.train.device_augment == "on" and cfg.train.amp is False and cfg.name == "yes"
    (tmp_path / "c.yaml").write_text("name: off\ntrain: {device_augment: off, compile: true}\n")
    cfg = load_config(str(tmp_path / "c.yaml"))
    assert (cfg.name, cfg.train.device_augment, cfg.train.compile) == ("off", "off", True)


def readme_config_block() -> str:
    """The YAML block of the README's "## Config" section."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("\n## Config\n", 1)[1]
    return section.split("```yaml\n", 1)[1].split("```", 1)[0]


def nested_keys(mapping: dict, prefix: str = "") -> set[str]:
    """Every key of a nested mapping as section.key; a key that holds a plain mapping (model.params,
    auto.backbones) counts as one key."""
    out = set()
    for key, value in mapping.items():
        sub = isinstance(value, dict) and f"{prefix}{key}" not in ("model.params", "auto.backbones")
        out |= nested_keys(value, f"{prefix}{key}.") if sub else {f"{prefix}{key}"}
    return out


def test_the_readme_config_shows_every_key_with_its_default():
    """A key left out of a user's file gets the schema's default: the README must show that value
    (it once showed the digits demo's, so `epochs: 1` surprised with three epochs)."""
    shown = yaml.load(readme_config_block(), Loader=ConfigLoader)
    defaults = config_to_dict(Config())
    missing, unknown = nested_keys(defaults) - nested_keys(shown), nested_keys(shown) - nested_keys(defaults)
    assert (missing, unknown) == (set(), set()), "keys the README leaves out, keys the schema lacks"
    built = flat_config(config_to_dict(build_config(shown)))
    wrong = {k: (v, flat_config(defaults)[k]) for k, v in built.items() if v != flat_config(defaults)[k]}
    assert wrong == {}, f"README value, schema default: {wrong}"


def test_epochs_count_stage_two_after_the_freeze_epochs():
    """As the README says: `epochs: 1` with the default two freeze epochs trains three epochs."""
    t = dataclasses.replace(TrainConfig(), epochs=1)
    assert [(s.number, s.first + 1, s.end) for s in plan_stages(t, two_stages=True)] == [(1, 1, 2), (2, 3, 3)]
    assert [(s.number, s.first + 1, s.end) for s in plan_stages(t, two_stages=False)] == [(2, 1, 3)]
