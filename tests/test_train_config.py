"""The typed training config: defaults, YAML, key=value overrides, errors that name the key."""

from __future__ import annotations

import pytest

from clearbg.data.augment import AugmentConfig
from clearbg.train.config import ConfigError, LossConfig, TrainConfig, load_config


def test_defaults_run_on_a_laptop():
    config = load_config(overrides=["data=prepared/"])
    assert config.model == "u2netp" and config.init == "official" and config.size == 320
    assert config.batch_size == 8 and config.epochs == 10 and config.resume == "auto"
    assert config.loss == LossConfig() and config.augment == AugmentConfig()


def test_yaml_then_overrides_last_wins(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text(
        "data: ds\n"
        "epochs: 2\n"
        "lr: 1e-3\n"  # YAML 1.1 reads this as a string: still a float here
        "loss:\n  iou: 0.5\n"
        "augment:\n  strength: 0.5\n  crop_scale: [0.6, 1.0]\n"
        "balance:\n  0: 0.5\n"
    )
    config = load_config(path, ["epochs=3", "loss.ssim=0.25", "augment.p_flip=0", "batch_size=auto",
                                "max_steps=null", "run_name=2024", "--lr=3e-4", "channels_last=false"])
    assert config.epochs == 3 and config.lr == pytest.approx(3e-4) and config.max_steps is None
    assert config.loss == LossConfig(bce=1.0, iou=0.5, ssim=0.25, boundary=0.0)  # nested keys merge
    assert config.augment.strength == 0.5 and config.augment.crop_scale == (0.6, 1.0) and config.augment.p_flip == 0
    assert config.batch_size == "auto" and config.run_name == "2024" and config.channels_last is False
    assert config.balance == {"0": 0.5}  # cluster ids as strings, as balance.cluster_shares matches them


def test_a_whole_nested_mapping_as_one_override():
    config = load_config(overrides=["data=ds", "loss={bce: 0.5, iou: 1}", "balance={shoes: 0.3}"])
    assert config.loss.bce == 0.5 and config.loss.iou == 1.0 and config.balance == {"shoes": 0.3}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("epochs=ten", "epochs must be an integer, got 'ten'"),
        ("lr=fast", "lr must be a number"),
        ("channels_last=maybe", "channels_last must be true or false"),
        ("batch_size=big", "batch_size must be a positive integer or 'auto'"),
        ("batch_size=0", "batch_size must be >= 1"),
        ("augment.crop_scale=0.5", "augment.crop_scale must be a list of 2 numbers"),
        ("augment.p_flip=2", "p_flip must be a probability"),
        ("scheduler=step", "scheduler must be one of cosine, plateau, none"),
        ("precision=int8", "precision must be one of auto, fp32, bf16, fp16"),
        ("loss.bce=0", "all loss weights are 0"),
        ("loss.iou=-1", "loss.iou must be a number >= 0"),
        ("balance=3", "balance must be a mapping"),
        ("epochs", "must look like key=value"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_config(overrides=["data=ds", override])


def test_unknown_keys_suggest_the_close_one(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'lrr' \(did you mean lr\?\)"):
        load_config(overrides=["data=ds", "lrr=1"])
    with pytest.raises(ConfigError, match=r"'loss.iuo' \(did you mean loss.iou\?\)"):
        load_config(overrides=["data=ds", "loss.iuo=1"])
    path = tmp_path / "bad.yaml"
    path.write_text("data: ds\nepochz: 3\n")
    with pytest.raises(ConfigError, match=rf"'epochz' \(did you mean epochs\?\) in {path}"):
        load_config(path)


def test_yaml_type_error_names_the_file_and_key(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("data: ds\nepochs: [1, 2]\n")
    with pytest.raises(ConfigError, match=rf"epochs must be an integer, got \[1, 2\] \(in {path}\)"):
        load_config(path)
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")


def test_data_is_required():
    with pytest.raises(ConfigError, match="data is required"):
        load_config()


def test_round_trips_through_dict_and_yaml(tmp_path):
    config = load_config(overrides=["data=ds", "loss.iou=0.5", "augment.strength=0.3", "balance={a: 0.5}"])
    assert TrainConfig.from_dict(config.to_dict()) == config
    path = tmp_path / "config.yaml"
    path.write_text(config.to_yaml())
    assert load_config(path) == config
    with pytest.raises(ConfigError, match="unknown config key 'nope'"):
        TrainConfig.from_dict({**config.to_dict(), "nope": 1})
