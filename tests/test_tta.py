"""Test-time flip (``--tta``): each map is the mean of the photo's and its mirror image's."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner
from PIL import Image, ImageOps

from clearbg.cli import cli
from clearbg.inference.predictor import Predictor


def test_the_map_is_the_mean_of_the_photo_and_its_mirror_image(fashion_photo):
    photo = fashion_photo.resize((120, 180))
    plain = Predictor("u2netp", device="cpu", engine="torch", precision="fp32")
    flipped = Predictor("u2netp", device="cpu", engine="torch", precision="fp32", tta=True)
    [own, mirrored] = plain.predict([photo, ImageOps.mirror(photo)])
    [tta] = flipped.predict([photo])
    assert tta.shape == own.shape
    np.testing.assert_allclose(tta, (own + mirrored[:, ::-1]) / 2, atol=1e-4)
    assert np.abs(tta - own).max() > 0.01  # the mirror image's map does move it
    # The quality gate keeps the one-pass map it was calibrated on, and the mirror image's.
    [detailed] = flipped.predict_detailed([photo])
    np.testing.assert_allclose(detailed.prob, tta, atol=1e-6)
    assert detailed.flipped is not None and detailed.small.shape == detailed.flipped.shape
    np.testing.assert_allclose(plain.predict_detailed([photo])[0].small, detailed.small, atol=1e-6)
    assert "flip TTA" in flipped.summary and "flip TTA" not in plain.summary
    import clearbg

    assert clearbg.Remover("u2netp", tta=True).predictor.tta


def test_remove_tta_from_the_command_line(tmp_path, fashion_photo):
    fashion_photo.resize((120, 180)).save(tmp_path / "p.jpg")
    result = CliRunner().invoke(cli, ["remove", str(tmp_path / "p.jpg"), "--out", str(tmp_path / "o"), "--tta", "--mask"])
    assert result.exit_code == 0, result.output
    assert "+ flip TTA" in result.output
    assert Image.open(tmp_path / "o" / "p.png").size == (120, 180)
