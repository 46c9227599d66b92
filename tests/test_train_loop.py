"""The training loop on real pairs at 64x64: the loss goes down, validation counts are right,
checkpoints hold what they should, official weights survive the switch to training mode."""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest
import torch

from clearbg.data.prepare import PrepareConfig, prepare_dataset
from clearbg.errors import ClearbgError
from clearbg.train.checkpoint import load_checkpoint
from clearbg.train.config import LossConfig, load_config
from clearbg.train.loop import train
from clearbg.train.model_init import calibrate_folded_batchnorm
from clearbg.train.schedule import LRSchedule
from clearbg.train.losses import DeepSupervisionLoss

SIZE = 64


def prepared(tmp_path_factory, shared_data, name: str, n_train: int, n_val: int) -> str:
    """A real prepared dataset of tiny fashion pairs; `cluster` = the product type."""
    rows = pd.read_csv(shared_data / "fashion" / "manifest.csv")
    rows = rows[rows["tiny"] == 1].sort_values("id").head(n_train + n_val)
    folder = tmp_path_factory.mktemp(name)
    csv = folder / "pairs.csv"
    rows.assign(
        image=[str(shared_data / "fashion" / p) for p in rows["image"]],
        mask=[str(shared_data / "fashion" / p) for p in rows["mask"]],
        split=["train"] * n_train + ["val"] * n_val,
        cluster=rows["product_type"],
    ).to_csv(csv, index=False)
    out = folder / "ds"
    prepare_dataset(str(csv), str(out), PrepareConfig(sizes=[(SIZE, SIZE)]), workers=1)
    return str(out)


@pytest.fixture(scope="module")
def one_thread():
    # One intra-op thread: fast and deterministic for these tiny shapes on a shared 2-core box.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def small_ds(tmp_path_factory, shared_data):
    return prepared(tmp_path_factory, shared_data, "loop-small", n_train=2, n_val=4)


def _config(data, out, *more):
    base = [f"data={data}", f"out={out}", f"size={SIZE}", "workers=0", "tracking_uri=off", "tensorboard=false"]
    return load_config(overrides=base + list(more))


def test_loss_decreases_on_a_fixed_tiny_batch(tmp_path, small_ds, one_thread):
    # Two training photos, batch 2, no augmentation: every step sees the same batch, so the
    # loss must fall step after step. It would not with a broken backward/optimizer/schedule.
    losses: list[float] = []
    config = _config(small_ds, tmp_path, "init=scratch", "batch_size=2", "epochs=8", "val_every=0",
                     "augment.strength=0", "scheduler=none", "lr=3e-3")
    result = train(config, on_epoch_end=lambda epoch, metrics: losses.append(metrics["train/loss"]))
    assert len(losses) == 8 and result.steps == 8 and result.epochs == 8
    assert losses[-1] < 0.6 * losses[0], losses
    assert sum(b < a for a, b in zip(losses, losses[1:])) >= 6, losses
    assert all(math.isfinite(v) for v in losses)


def test_validation_iou_matches_an_independent_count(tmp_path, small_ds, one_thread):
    config = _config(small_ds, tmp_path, "init=scratch", "batch_size=2", "max_steps=2", "scheduler=none", "precision=fp32")
    result = train(config)
    ckpt = load_checkpoint(result.last_checkpoint)
    # The checkpoint carries the resolved config, and resumes on its own.
    assert ckpt["config"] == config.to_dict()
    assert ckpt["position"]["step"] == 2 and ckpt["model_name"] == "u2netp.official"

    # Independently: every original val photo through the predictor, IoU counted by hand, per image.
    from PIL import Image

    from clearbg.inference.predictor import Predictor
    from clearbg.models.hub import ResolvedModel
    from clearbg.models.specs import get_spec

    model = get_spec("u2netp").builder()
    model.load_state_dict(ckpt["model"])
    predictor = Predictor(ResolvedModel(model.eval(), get_spec("u2netp"), "test"), device="cpu", precision="fp32")
    manifest = pd.read_parquet(f"{small_ds}/manifest.parquet")
    scores: dict[str, list[float]] = {}
    for row in manifest[manifest["split"] == "val"].itertuples():
        photo = Image.open(row.src_image).convert("RGB")
        truth = np.asarray(Image.open(row.src_mask)) >= 128
        pred = predictor.predict([photo])[0] > 0.5
        scores.setdefault(row.product_type, []).append((pred & truth).sum() / (pred | truth).sum())
    every = [v for group in scores.values() for v in group]
    assert len(every) == 4
    assert result.metrics["val/iou"] == pytest.approx(np.mean(every), abs=1e-6)
    for name, values in scores.items():
        assert result.metrics[f"val/iou/{name}"] == pytest.approx(np.mean(values), abs=1e-6)
    best = load_checkpoint(result.best_checkpoint)
    assert best["metrics"]["val/iou"] == result.best_val_iou and best["config"] == config.to_dict()


def test_best_checkpoint_loads_for_inference(tmp_path, small_ds, one_thread):
    from clearbg.inference.predictor import Predictor

    result = train(_config(small_ds, tmp_path, "init=scratch", "batch_size=2", "max_steps=1"))
    predictor = Predictor(result.best_checkpoint, device="cpu", precision="fp32")
    assert predictor.spec.arch == "u2netp"


def test_official_weights_keep_their_output_when_batchnorm_is_calibrated(small_ds, one_thread):
    from clearbg.data.dataset import PairDataset
    from clearbg.models import create_model

    model = create_model("u2netp")  # folded official weights: identity BatchNorm layers
    ds = PairDataset(small_ds, split=None, size=SIZE)
    x = torch.stack([ds[i]["image"] for i in range(len(ds))])
    x = (x / x.amax(dim=(1, 2, 3), keepdim=True) - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        before = model.eval()(x, fused_only=True)
        broken = copy.deepcopy(model).train()(x, fused_only=True)  # batch statistics on an identity BatchNorm
        assert calibrate_folded_batchnorm(model, [x]) == 112
        after_eval = model.eval()(x, fused_only=True)
        after_train = model.train()(x, fused_only=True)
    assert torch.allclose(after_eval, before, atol=1e-4)  # the eval function is unchanged
    assert (after_train - before).abs().mean() < 0.2 * (broken - before).abs().mean()
    assert calibrate_folded_batchnorm(model, [x]) == 0  # calibrated layers are no longer identities


def test_logits_path_matches_the_probabilities():
    from clearbg.models.u2net import u2netp

    torch.manual_seed(0)
    model = u2netp().eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        probs, logits = model(x), model(x, logits=True)
        assert len(logits) == 7
        for p, z in zip(probs, logits):
            assert torch.equal(p, torch.sigmoid(z))
        assert torch.equal(model(x, fused_only=True, logits=True), logits[0])


def test_deep_supervision_bce_equals_the_official_sum_of_bce():
    torch.manual_seed(0)
    target = (torch.rand(2, 1, 16, 16) > 0.5).float()
    logits = [torch.randn(2, 1, 16, 16) for _ in range(7)]
    total, parts = DeepSupervisionLoss(LossConfig())(logits, target)
    official = sum(torch.nn.functional.binary_cross_entropy(torch.sigmoid(z), target) for z in logits)
    assert total.item() == pytest.approx(official.item(), rel=1e-5)
    assert set(parts) == {"bce"}
    good, _ = DeepSupervisionLoss(LossConfig(bce=0, iou=1, ssim=1, boundary=1))([target * 20 - 10], target)
    bad, _ = DeepSupervisionLoss(LossConfig(bce=0, iou=1, ssim=1, boundary=1))([10 - target * 20], target)
    assert good < 0.01 < 2.5 < bad


def test_schedule_warms_up_then_follows_a_cosine_and_plateau_halves():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = LRSchedule(opt, "cosine", lr=1.0, warmup_steps=10, total_steps=100)
    lrs = []
    for _ in range(100):
        lrs.append(sched.current)
        sched.step()
    assert lrs[0] == pytest.approx(0.01) and lrs[10] == pytest.approx(1.0)
    assert lrs[55] == pytest.approx(0.01 + 0.99 * 0.5, abs=1e-3)  # half-way through the cosine
    assert all(b <= a for a, b in zip(lrs[10:], lrs[11:]))
    plateau = LRSchedule(opt, "plateau", lr=1.0, warmup_steps=0, total_steps=10)
    for value in (0.5, 0.6, 0.6, 0.6):
        plateau.observe(value)
    assert plateau.current == pytest.approx(0.5)
    restored = LRSchedule(opt, "plateau", lr=1.0, warmup_steps=0, total_steps=10)
    restored.load_state_dict(plateau.state_dict())
    assert restored.current == pytest.approx(0.5)


def test_on_epoch_end_can_stop_a_run_and_the_error_propagates(tmp_path, small_ds, one_thread):
    class Pruned(Exception):
        pass

    def prune(epoch, metrics):
        raise Pruned(f"epoch {epoch}")

    with pytest.raises(Pruned, match="epoch 1"):
        train(_config(small_ds, tmp_path, "init=scratch", "batch_size=2", "epochs=3", "val_every=0"), on_epoch_end=prune)


def test_unusable_settings_are_clear_errors(tmp_path, small_ds):
    with pytest.raises(ClearbgError, match="fp16 needs a CUDA GPU"):
        train(_config(small_ds, tmp_path, "precision=fp16", "device=cpu"))
    with pytest.raises(ClearbgError, match="nosuch"):
        train(_config(small_ds, tmp_path, "balance={nosuch: 0.5}", "max_steps=1", "init=scratch"))
