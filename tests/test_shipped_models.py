"""The models clearbg trained and ships: in the package, verified, documented, and the ones that run."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from clearbg.cli import cli
from clearbg.errors import WeightsIntegrityError
from clearbg.models import specs
from clearbg.models.download import cached_weights
from clearbg.models.hub import resolve
from clearbg.models.specs import ShippedFile, get_spec, list_models

SHIPPED = [name for name in list_models() if isinstance(get_spec(name).weights, ShippedFile)]
CARD_KEYS = {"license", "base", "data", "command", "hardware", "time", "selected", "test"}


def test_the_fashion_champion_ships_under_its_domain_name():
    assert "u2netp.fashion" in SHIPPED
    assert get_spec("fashion").name == "u2netp.fashion"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_are_verified_small_documented_and_load(name):
    weights = get_spec(name).weights
    data = weights.path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == weights.sha256
    assert len(data) <= 25 * 2**20  # the ceiling for a shipped file
    card = weights.card()
    assert CARD_KEYS <= set(card), CARD_KEYS - set(card)
    assert card["command"].startswith("clearbg train ") and card["test"]["mean IoU"] > 0.9
    found = resolve(name)
    assert found.spec.name == name and found.network is not None
    # not the official weights under another name
    official = resolve(get_spec(name).arch).network.state_dict()
    assert any(not (v == official[k]).all() for k, v in found.network.state_dict().items() if v.is_floating_point())


def test_a_damaged_shipped_file_is_refused(tmp_path, monkeypatch):
    name = SHIPPED[0]
    weights = get_spec(name).weights
    damaged = bytearray(weights.path.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    (tmp_path / weights.file).write_bytes(bytes(damaged))
    monkeypatch.setattr(specs, "SHIPPED_DIR", tmp_path)
    monkeypatch.setattr("clearbg.models.download._VERIFIED", set())
    with pytest.raises(WeightsIntegrityError, match="reinstall clearbg"):
        cached_weights(get_spec(name))


def test_models_lists_the_shipped_ones_with_their_cards():
    result = CliRunner().invoke(cli, ["models"])
    assert result.exit_code == 0, result.output
    for name in SHIPPED:
        row = next(line for line in result.output.splitlines() if line.startswith(name + " "))
        assert "shipped" in row
        weights = get_spec(name).weights
        assert weights.sha256 in result.output and weights.card()["command"] in result.output
    one = CliRunner().invoke(cli, ["models", "fashion"])
    assert one.exit_code == 0 and "u2netp.fashion (also: fashion)" in one.output
    assert not any(line.startswith("u2netp.official ") for line in one.output.splitlines())  # that model only


def test_remove_with_a_domain_model_runs_the_shipped_weights(fashion_photo, tmp_path):
    fashion_photo.save(tmp_path / "p.jpg")
    masks = {}
    for model in ("u2netp", "fashion"):
        result = CliRunner().invoke(cli, ["remove", str(tmp_path / "p.jpg"), "--out", str(tmp_path / model),
                                          "--model", model, "--mask", "--no-clean"])
        assert result.exit_code == 0, result.output
        masks[model] = np.asarray(Image.open(tmp_path / model / "p.png"), dtype=np.int16)
    assert masks["fashion"].shape == masks["u2netp"].shape
    assert np.abs(masks["fashion"] - masks["u2netp"]).max() > 0  # other weights, other mask


@pytest.mark.parametrize("name", SHIPPED)
def test_each_shipped_model_has_its_confidence_calibration(name):
    from clearbg.quality.store import load_calibration

    assert load_calibration(name) is not None
