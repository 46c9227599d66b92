"""The GPU path: mixed precision training (fp16 + grad scaler, bf16), NCCL, the predictor and
`--batch-size auto` on CUDA. Skipped on machines without a CUDA GPU (this project's CI); run them
where one exists with `bash bench/gpu_check.sh`, which also runs the speed benches."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_pairs_csv) -> str:
    from clearbg.data.prepare import PrepareConfig, prepare_dataset

    out = str(tmp_path_factory.mktemp("cuda") / "ds")
    config = PrepareConfig(sizes=[(320, 320)], split=(0.75, 0.25, 0.0), resplit=True)
    prepare_dataset(tiny_pairs_csv(8), out, config, workers=1)
    return out


def _train(prepared: str, out, *overrides: str):
    from clearbg.train.config import load_config
    from clearbg.train.loop import train

    return train(load_config(overrides=[f"data={prepared}", f"out={out}", "device=cuda", "workers=0",
                                        "tracking_uri=off", "tensorboard=false", *overrides]), progress=False)


def test_fp16_training_with_the_grad_scaler_trains_and_resumes(prepared, tmp_path):
    from clearbg.train.checkpoint import load_checkpoint

    first = _train(prepared, tmp_path, "precision=fp16", "max_steps=2", "epochs=2", "batch_size=2")
    state = load_checkpoint(first.last_checkpoint)
    assert state["scaler"]["scale"] > 0  # the scaler was live and is saved
    second = _train(prepared, tmp_path, "precision=fp16", "max_steps=4", "epochs=2", "batch_size=2")
    assert second.steps == 4 and np.isfinite(second.metrics["train/loss"])
    assert second.start_val_iou is None or second.metrics["val/iou"] > 0.5


@pytest.mark.skipif(torch.cuda.is_available() and not torch.cuda.is_bf16_supported(), reason="GPU without bf16")
def test_bf16_autocast_training_keeps_the_official_quality(prepared, tmp_path):
    result = _train(prepared, tmp_path, "precision=bf16", "max_steps=3", "batch_size=2")
    assert result.metrics["val/iou"] > result.start_val_iou - 0.03


def test_predictor_on_cuda_matches_the_cpu(fashion_photo):
    from clearbg.inference.predictor import Predictor

    gpu = Predictor("u2netp", device="cuda")  # fp16 by default on CUDA
    cpu = Predictor("u2netp", device="cpu", precision="fp32")
    assert gpu.precision == "fp16"
    a, b = gpu.predict([fashion_photo])[0] > 0.5, cpu.predict([fashion_photo])[0] > 0.5
    assert (a & b).sum() / (a | b).sum() > 0.99
    many = gpu.predict([fashion_photo] * 5)  # one stacked batch on the GPU
    assert all(np.array_equal(m > 0.5, many[0] > 0.5) for m in many)


def test_nccl_process_group_reduces_on_the_gpu(monkeypatch):
    from clearbg.train.process_group import all_reduce_sum, cleanup, setup_distributed

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(29500 + os.getpid() % 1000))
    env = setup_distributed("cuda")
    try:
        assert torch.distributed.get_backend() == "nccl" and env.device.type == "cuda"
        counts = torch.tensor([2.0, 3.0], device=env.device)
        assert all_reduce_sum(counts).tolist() == [2.0, 3.0]
    finally:
        cleanup()


def test_batch_size_auto_finds_a_batch_that_fits_on_the_gpu():
    from clearbg.models import create_model
    from clearbg.train.batch_size import find_batch_size

    found = find_batch_size(create_model("u2netp").cuda(), 320, "cuda", precision="fp16", max_batch=64)
    assert 2 <= found <= 64
