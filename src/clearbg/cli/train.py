"""``clearbg train --data DATASET [...]``"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile

import click

from clearbg.errors import ClearbgError

# Named flags are shorthands for --set KEY=VALUE (the same names as `python -m clearbg.train`).
_FLAGS = ("data", "out", "run_name", "model", "init", "epochs", "max_steps", "batch_size", "lr", "size", "device",
          "resume", "seed", "profile")


@click.command("train")
@click.option("--data", help="Prepared dataset folder (`clearbg prepare`); or data: in --config.")
@click.option("--model", help="Registry name: u2netp (default), u2net, isnet, unet, ...")
@click.option("--init", help="official (default) | scratch | a .pth/.pt checkpoint | another registry name.")
@click.option("--epochs", type=int, help="Passes over the train split (default 10).")
@click.option("--batch-size", help="Images per step and process, or 'auto' (largest that fits; default 8).")
@click.option("--lr", type=float, help="Peak learning rate (default: 1e-4 from pretrained weights, 1e-3 from scratch).")
@click.option("--size", type=int, help="Training resolution (default 320).")
@click.option("--max-steps", type=int, help="Stop after this many steps in total.")
@click.option("--out", help="Folder for runs (default runs/).")
@click.option("--run-name", help="Run folder name (default <model>-<dataset>; rerunning it resumes).")
@click.option("--resume", help="auto (default: continue the run's latest.pt) | never | a checkpoint path.")
@click.option("--device", help="cpu, cuda, cuda:1 (default: CUDA when available).")
@click.option("--seed", type=int, help="Seed for init, data order and augmentation (default 0).")
@click.option("--profile", type=int, metavar="N",
              help="Profile N steps: time per phase (data, forward, backward, optimizer) and the top operators "
                   "in RUN/profile.txt, the trace in TensorBoard, both in MLflow.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), help="YAML file of settings.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Any setting, e.g. --set loss.iou=0.5 --set scheduler=plateau (repeatable).")
@click.option("--nproc", type=int, default=1, show_default=True,
              help="Processes on this machine (DDP through torchrun; one per GPU, or CPU processes).")
@click.option("--max-restarts", type=int, default=2, show_default=True,
              help="With --nproc: restart the group this often after a lost worker (resumes from latest.pt).")
def train_command(config_path, overrides, nproc, max_restarts, **flags):
    """Train or fine-tune a model on a prepared dataset, with checkpoints, resume and tracking.

    Settings come from the defaults, then --config, then --set, then the named flags. Runs go to
    OUT/RUN_NAME (checkpoints/latest.pt and best.pt, config.yaml, tensorboard/) and to MLflow
    (default: sqlite:///OUT/mlflow.db; `mlflow ui --backend-store-uri sqlite:///runs/mlflow.db`).
    Rerunning the same command continues an interrupted run.

    \b
    Examples:
      clearbg train --data data/shop-320 --epochs 5
      clearbg train --data data/shop-320 --model unet --init scratch --batch-size auto
      clearbg train --config train.yaml --set loss.iou=0.5 --nproc 2
    """
    named = [f"{key}={value}" for key, value in flags.items() if value is not None]
    settings = list(overrides) + named
    if nproc > 1:
        sys.exit(_run_torchrun(config_path, settings, nproc, max_restarts))
    if nproc < 1:
        raise click.BadParameter("must be >= 1", param_hint="--nproc")

    from clearbg.train.config import load_config
    from clearbg.train.loop import train

    _log_to_stderr()
    try:
        config = load_config(config_path, settings)
        result = train(config)
    except ClearbgError as err:
        raise click.ClickException(str(err)) from err
    except KeyboardInterrupt:
        click.echo("interrupted; rerun the same command to resume from the last checkpoint", err=True)
        sys.exit(130)
    _print_result(vars(result))


def _log_to_stderr() -> None:
    logger = logging.getLogger("clearbg.train")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _print_result(result: dict) -> None:
    metrics = result.get("metrics") or {}
    if result.get("best_val_iou") is not None:
        click.echo(f"best val IoU {result['best_val_iou']:.4f} -> {result['best_checkpoint']}")
    clusters = {k.removeprefix("val/iou/"): v for k, v in metrics.items() if k.startswith("val/iou/")}
    if clusters:
        click.echo("last val IoU per cluster: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(clusters.items())))
    click.echo(
        f"{result['steps']} steps, {result['epochs']} epoch(s), {result['images_per_second']:.1f} img/s; "
        f"last checkpoint {result['last_checkpoint']}"
    )


def _run_torchrun(config_path: str | None, settings: list[str], nproc: int, max_restarts: int) -> int:
    """Re-launch this training under torchrun on this machine; rank 0's result is printed."""
    with tempfile.TemporaryDirectory(prefix="clearbg-train-") as tmp:
        result_path = os.path.join(tmp, "result.json")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               f"--max-restarts={max_restarts}", "-m", "clearbg.train", "--result-json", result_path]
        if config_path:
            cmd += ["--config", config_path]
        for item in settings:
            cmd += ["--set", item]
        env = dict(os.environ)
        # torchrun's default is one thread per worker; on CPU, split the cores between them.
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
        click.echo(" ".join(cmd), err=True)
        code = subprocess.call(cmd, env=env)
        if code == 0 and os.path.isfile(result_path):
            with open(result_path) as f:
                _print_result(json.load(f))
        return code
