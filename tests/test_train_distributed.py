"""Distributed training on CPU: real torchrun / gloo processes running ``python -m clearbg.train``.

* 2-process DDP ends with identical weights on both ranks and matches 1-process training with
  the same global batch.
* Validation metrics are reduced from counts over ranks, not averaged per rank.
* An elastic torchrun job survives a worker killed by SIGKILL: it restarts and finishes from the
  last checkpoint.

BatchNorm and DDP: on CPU there is no SyncBatchNorm (DDP refuses it: "SyncBatchNorm layers only
work with GPU modules"), so in training mode each rank normalises with the statistics of its own
half of the batch. DDP is then "ghost batch norm", not the same function as one process seeing
the whole batch, and after a few AdamW steps the two differ as much as runs on different data
do (measured: L2 distance 2.8 vs 2.8 for a different batch order). The equivalence test therefore
trains u2netp with frozen BatchNorm (running statistics, i.e. eval-mode BN, registered by the
harness below), which isolates what DDP must get right: sharding, gradient averaging and
identical optimizer steps. The elastic test trains the plain u2netp.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from clearbg.errors import ClearbgError
from clearbg.train.process_group import DistEnv, all_reduce_sum, barrier, cleanup, is_main, setup_distributed

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, shared_data) -> str:
    """16 train + 8 val real fashion pairs at 64x64 (the tiny subset, splits assigned here)."""
    from clearbg.data.prepare import PrepareConfig, prepare_dataset

    root = shared_data / "fashion"
    rows = pd.read_csv(root / "manifest.csv")
    rows = rows[rows["tiny"] == 1].sort_values("id").head(24).reset_index(drop=True)
    rows["image"] = [str(root / p) for p in rows["image"]]
    rows["mask"] = [str(root / p) for p in rows["mask"]]
    rows["split"] = ["train"] * 16 + ["val"] * 8
    work = tmp_path_factory.mktemp("dist-data")
    rows.to_csv(work / "pairs.csv", index=False)
    prepare_dataset(str(work / "pairs.csv"), str(work / "ds"), PrepareConfig(sizes=[(64, 64)]), workers=1)
    return str(work / "ds")


def _common(dataset: str, out: Path) -> list[str]:
    return ["--data", dataset, "--out", str(out), "--init", "scratch", "--size", "64", "--device", "cpu",
            "--set", "workers=0", "--set", "augment.strength=0", "--set", "tracking_uri=off",
            "--set", "tensorboard=false", "--set", "precision=fp32"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(extra)
    return env


def _check(proc: subprocess.CompletedProcess | subprocess.Popen, out: str) -> None:
    assert proc.returncode == 0, out[-6000:]


# --------------------------------------------------------------------------- in-process basics


def test_without_torchrun_it_is_one_process_and_collectives_are_identities(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    env = setup_distributed("cpu")
    assert env == DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    assert env.is_main and not env.distributed and is_main()
    assert setup_distributed(None).world_size == 1  # idempotent, no group created
    counts = torch.tensor([3.0, 4.0])
    assert all_reduce_sum(counts) is counts and counts.tolist() == [3.0, 4.0]
    barrier()
    cleanup()
    cleanup()


def test_torchrun_variables_without_a_master_are_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ClearbgError, match="MASTER_ADDR is not set; launch with torchrun"):
        setup_distributed("cpu")
    assert not is_main()  # RANK=1 before any group exists
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ClearbgError, match="WORLD_SIZE='two' must be an integer"):
        setup_distributed("cpu")


def test_worker_entry_turns_config_errors_into_exit_code_2(tmp_path, capsys):
    from clearbg.train.__main__ import main, parse_args

    args = parse_args(["--config", "c.yaml", "--set", "lr=3e-4", "--set", "loss.iou=0.5", "--data", "ds", "--batch-size", "2"])
    assert (args.config, args.overrides, args.data, args.batch_size) == ("c.yaml", ["lr=3e-4", "loss.iou=0.5"], "ds", "2")
    assert main(["--data", str(tmp_path), "--set", "epochs=zero"]) == 2
    assert "epochs must be an integer" in capsys.readouterr().err


# --------------------------------------------------------------------------- validation sums

_VALIDATE = textwrap.dedent("""
    # One rank of the validation test: full-resolution metrics of this rank's share of the val
    # photos, before and after joining the process group. RANK / WORLD_SIZE / MASTER_* come from the test.
    import json, os, sys
    import torch
    from clearbg.models import create_model, get_spec
    from clearbg.train.process_group import broadcast_buffers, cleanup, setup_distributed
    from clearbg.train.validation import ValidationSet, validate

    val, model = ValidationSet(sys.argv[1]), create_model("u2netp")
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = validate(model, get_spec("u2netp"), val, torch.device("cpu"), rank=rank, world=world)  # no group yet
    env = setup_distributed("cpu")
    reduced = validate(model, get_spec("u2netp"), val, torch.device("cpu"), rank=env.rank, world=env.world_size)
    bn = torch.nn.BatchNorm2d(2)
    bn.running_mean += env.rank + 1  # ranks hold different running statistics ...
    broadcast_buffers(bn)  # ... until rank 0's are copied to all
    print(json.dumps({"rank": env.rank, "world": env.world_size, "local": local, "reduced": reduced,
                      "running_mean": bn.running_mean.tolist()}))
    cleanup()
""")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_validation_sums_per_image_scores_over_ranks(dataset, tmp_path):
    from clearbg.models import create_model, get_spec
    from clearbg.train.validation import ValidationSet, validate

    script = tmp_path / "validate_rank.py"
    script.write_text(_VALIDATE)
    port = str(_free_port())
    procs = [
        subprocess.Popen([sys.executable, str(script), dataset], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True,
                         env=_env(RANK=str(r), WORLD_SIZE="2", LOCAL_RANK=str(r), MASTER_ADDR="127.0.0.1",
                                  MASTER_PORT=port, OMP_NUM_THREADS="1"))
        for r in range(2)
    ]
    # Meanwhile, this process: all 8 val photos at once, no process group.
    everything = validate(create_model("u2netp"), get_spec("u2netp"), ValidationSet(dataset), torch.device("cpu"))

    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        _check(proc, out)
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert everything["images"] == 8 and 0.5 < everything["iou"] < 1
    assert [r["world"] for r in results] == [2, 2]
    assert [r["running_mean"] for r in results] == [[1.0, 1.0], [1.0, 1.0]]
    assert [r["local"]["images"] for r in results] == [4, 4]  # each rank scored its own share ...
    for r in results:
        for key in ("iou", "dice", "boundary_f", "share_iou_95", "images"):
            assert r["reduced"][key] == pytest.approx(everything[key], abs=1e-6), (key, r)  # ... and all agree
    assert results[0]["local"]["iou"] != pytest.approx(results[1]["local"]["iou"], abs=1e-4)


# --------------------------------------------------------------------------- DDP == one process

_HARNESS = textwrap.dedent('''
    """Test harness: ``python -m clearbg.train`` for a u2netp with frozen BatchNorm, then each
    rank saves the weights it holds to $DUMP_DIR/rank<RANK>.pt (only rank 0 writes checkpoints)."""
    import os, sys
    import torch
    from torch import nn
    from clearbg.models import u2net
    from clearbg.models.specs import ModelSpec, add_spec as register, get_spec
    from clearbg.train.__main__ import main

    class FrozenBatchNorm2d(nn.BatchNorm2d):
        """BatchNorm that always normalises with its running statistics, even in train()."""
        def train(self, mode=True):
            return super().train(False)

    built = []

    def frozen_u2netp():
        model = u2net.u2netp()
        for module in model.modules():
            if type(module) is nn.BatchNorm2d:
                module.__class__ = FrozenBatchNorm2d  # same parameters and state-dict keys
        built.append(model)
        return model

    base = get_spec("u2netp")
    register(ModelSpec(name="u2netpfrozen.scratch", builder=frozen_u2netp, preprocess=base.preprocess,
                       weights=None, license=base.license,
                       source="test harness: u2netp with frozen BatchNorm"))
    code = main(sys.argv[1:])
    assert len(built) == 1, len(built)
    torch.save(built[0].state_dict(), os.path.join(os.environ["DUMP_DIR"], f"rank{os.environ.get('RANK', '0')}.pt"))
    sys.exit(code)
''')


def _l2(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return float(sum(((a[k].double() - b[k].double()) ** 2).sum() for k in a if a[k].is_floating_point()) ** 0.5)


def test_two_process_ddp_matches_one_process_with_the_same_global_batch(dataset, tmp_path):
    harness = tmp_path / "harness.py"
    harness.write_text(_HARNESS)
    common = _common(dataset, tmp_path / "runs") + ["--model", "u2netpfrozen", "--set", "epochs=1",
                                                    "--set", "max_steps=3", "--set", "warmup_steps=0"]
    for name in ("ddp", "one"):
        (tmp_path / name).mkdir()
    # Global batch 4: 2 processes x 2 images, and 1 process x 4 images. Run both at once.
    ddp = subprocess.Popen([*TORCHRUN, str(harness), *common, "--batch-size", "2", "--run-name", "ddp",
                            "--result-json", str(tmp_path / "ddp" / "result.json")],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=_env(DUMP_DIR=str(tmp_path / "ddp")))
    one = subprocess.run([sys.executable, str(harness), *common, "--batch-size", "4", "--run-name", "one",
                          "--result-json", str(tmp_path / "one" / "result.json")],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
                         env=_env(DUMP_DIR=str(tmp_path / "one"), OMP_NUM_THREADS="1"))
    ddp_out, _ = ddp.communicate(timeout=300)
    _check(ddp, ddp_out)
    _check(one, one.stdout)

    rank0, rank1 = (torch.load(tmp_path / "ddp" / f"rank{r}.pt") for r in (0, 1))
    assert rank0.keys() == rank1.keys()
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0), "ranks diverged"
    checkpoint = torch.load(tmp_path / "runs" / "ddp" / "checkpoints" / "latest.pt", weights_only=False)
    assert all(torch.equal(checkpoint["model"][k], rank0[k]) for k in rank0)  # the dump is the trained model

    single = torch.load(tmp_path / "one" / "rank0.pt")
    torch.manual_seed(0)  # the loop's scratch init (seed 0)
    from clearbg.models import u2net

    init = u2net.u2netp().state_dict()
    moved, apart = _l2(single, init), _l2(single, rank0)
    assert moved > 0.1  # three AdamW steps did move the weights
    assert apart < 1e-3 * moved, (apart, moved)

    ddp_result = json.loads((tmp_path / "ddp" / "result.json").read_text())
    one_result = json.loads((tmp_path / "one" / "result.json").read_text())
    assert ddp_result["steps"] == one_result["steps"] == 3
    # The epoch's train loss is a sum over both ranks' images, so it equals the one-process loss.
    assert ddp_result["metrics"]["train/loss"] == pytest.approx(one_result["metrics"]["train/loss"], rel=1e-4)
    assert ddp_result["metrics"]["val/iou"] == pytest.approx(one_result["metrics"]["val/iou"], abs=2e-3)


# --------------------------------------------------------------------------- elastic restart


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


def _rank_of(pid: int) -> int | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in environ:
        if item.startswith(b"RANK="):
            return int(item[5:])
    return None


def test_elastic_torchrun_survives_a_killed_worker_and_finishes_from_the_checkpoint(dataset, tmp_path):
    # 16 train images, 2 ranks x 2 images: 4 steps per epoch, 12 steps in all; a checkpoint every step.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--max-restarts=1",
           "--monitor-interval=0.2", "-m", "clearbg.train", *_common(dataset, tmp_path / "runs"), "--model", "u2netp",
           "--batch-size", "2", "--run-name", "elastic", "--set", "epochs=3", "--set", "checkpoint_every=1",
           "--result-json", str(tmp_path / "result.json")]
    log = open(tmp_path / "torchrun.log", "w+")
    torchrun = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env(), start_new_session=True)
    latest = tmp_path / "runs" / "elastic" / "checkpoints" / "latest.pt"
    try:
        deadline = time.monotonic() + 120
        while not latest.exists():
            assert torchrun.poll() is None, (tmp_path / "torchrun.log").read_text()[-4000:]
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.02)
        victim = next(pid for pid in _children(torchrun.pid) if _rank_of(pid) == 1)
        os.kill(victim, signal.SIGKILL)  # a real lost worker, mid-run
        killed_at = torch.load(latest, weights_only=False)["position"]["step"]
        torchrun.wait(timeout=240)
    finally:
        if torchrun.poll() is None:
            os.killpg(torchrun.pid, signal.SIGKILL)
            torchrun.wait()
    log.seek(0)
    output = log.read()
    assert torchrun.returncode == 0, output[-6000:]
    assert not Path(f"/proc/{victim}").exists()
    assert killed_at < 12, "the job had already finished when the worker was killed"
    # torchrun restarted the worker group, and the new rank 0 continued from latest.pt.
    starts = [line for line in output.splitlines() if "process(es))" in line]
    assert len(starts) == 2 and starts[0].endswith("new run") and "resuming" in starts[1], starts
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["steps"] == 12 and result["epochs"] == 3
    final = torch.load(latest, weights_only=False)["position"]
    assert final["step"] == 12 and final["epoch"] == 3
