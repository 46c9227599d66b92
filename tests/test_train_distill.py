"""Distillation: the training targets blend the true mask with a teacher's map, computed once.

The teacher is a checkpoint whose fused output is negated (it predicts the background), so its
share in the target is unmistakable: at weight 1 the target is the inverse of the true mask.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from clearbg.data.dataset import PairDataset
from clearbg.data.prepare import PrepareConfig, prepare_dataset
from clearbg.models import create_model
from clearbg.train.config import ConfigError, DistillConfig, load_config
from clearbg.train.distill import blend, teacher_folder, teacher_targets
from clearbg.train.loop import train


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_pairs_csv) -> str:
    out = str(tmp_path_factory.mktemp("distill") / "ds")
    prepare_dataset(tiny_pairs_csv(4, split=["train", "train", "train", "val"]), out,
                    PrepareConfig(sizes=[(64, 64)]), workers=1)
    return out


@pytest.fixture(scope="module")
def inverted_teacher(tmp_path_factory) -> str:
    state = create_model("u2netp").state_dict()
    state["outconv.weight"], state["outconv.bias"] = -state["outconv.weight"], -state["outconv.bias"]
    path = tmp_path_factory.mktemp("teacher") / "inverted.pth"
    torch.save(state, path)
    return str(path)


def config_overrides(prepared, out) -> list[str]:
    return [f"data={prepared}", f"out={out}", "size=64", "batch_size=3", "workers=0", "tracking_uri=off",
            "tensorboard=false", "precision=fp32", "max_steps=1", "epochs=1", "augment.strength=0"]


def test_blend_weighs_the_truth_against_the_teacher():
    mask = np.array([[0, 255, 255]], dtype=np.uint8)
    prob = np.array([[1.0, 0.0, 1.0]], dtype=np.float32)
    assert blend(mask, prob, 0.0).tolist() == [[0, 255, 255]]
    assert blend(mask, prob, 1.0).tolist() == [[255, 0, 255]]
    assert blend(mask, prob, 0.25).tolist() == [[64, 191, 255]]
    with pytest.raises(ConfigError, match="distill.weight"):
        DistillConfig(teacher="u2netp", weight=1.5)


def test_teacher_targets_follow_the_teacher_and_are_computed_once(prepared, inverted_teacher, tmp_path):
    dataset = PairDataset(prepared, split="train", size=64)
    config = DistillConfig(teacher=inverted_teacher, weight=1.0)
    paths = teacher_targets(dataset, config, tmp_path, "cpu")
    assert set(paths) == set(dataset.ids)
    for i, pair_id in enumerate(dataset.ids):
        _, truth = dataset.load_pair(i)
        target = np.asarray(Image.open(paths[pair_id]))
        assert target.shape == truth.shape
        # the inverted teacher disagrees with the truth on most pixels; weight 1 follows the teacher
        assert np.mean((target > 127) != (truth > 127)) > 0.8
    stamp = {p: Image.open(p).tobytes() for p in paths.values()}
    first = next(iter(paths.values()))
    Image.new("L", (64, 64), 7).save(first)  # a kept target is not recomputed
    assert teacher_targets(dataset, config, tmp_path, "cpu") == paths
    assert np.asarray(Image.open(first)).max() == 7 and len(stamp) == len(paths)
    assert teacher_folder(tmp_path, config).name.endswith("-w1")


def test_training_with_a_teacher_learns_from_its_targets(prepared, inverted_teacher, tmp_path):
    config = load_config(overrides=[*config_overrides(prepared, tmp_path), f"distill.teacher={inverted_teacher}",
                                    "distill.weight=1.0"])
    distilled = train(config, progress=False).metrics["train/loss"]
    assert len(list(tmp_path.glob("*/teacher/*-w1/*.png"))) == 3
    plain = train(load_config(overrides=[*config_overrides(prepared, tmp_path / "plain")]), progress=False)
    # the loss is taken against the teacher's (inverted) map: far higher than against the truth
    assert distilled > 3 * plain.metrics["train/loss"], (distilled, plain.metrics["train/loss"])
