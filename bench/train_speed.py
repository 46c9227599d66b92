"""Training speed on this CPU: clearbg's loop against the official U-2-Net training loop.

``official`` is written here from the published U-2-Net training script (xuebinqin/U-2-Net
``u2net_train.py``): the same network (U^2-NetP, official module layout), ``nn.BCELoss`` on the
sigmoid outputs summed over the fused map and the six side outputs (``muti_bce_loss_fusion``),
``Adam(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0)``, NCHW float32, a DataLoader with
``num_workers=1`` and shuffling, ``zero_grad / forward / loss / backward / step`` and
``loss.item()`` every step, PyTorch's default threads. No tricks.

``clearbg`` is ``clearbg.train.loop.train`` as a user runs it (its defaults for this machine:
full augmentation in 2 DataLoader workers, fused AdamW, gradient clipping, channels-last,
``precision=auto``), from scratch as the official script trains.

Both read the same prepared 320x320 dataset (``clearbg prepare`` of fashion pairs, made once in
a cache folder), batch 8. Each setup runs in its own process, ``--rounds`` times, interleaved
(official, clearbg, official, ...) because the machine is shared; the table quotes medians.
Images/s counts every step after the first (the first includes one-time kernel selection),
data loading included. Peak memory is the training process's peak RSS (DataLoader workers are
separate processes and not included).

    python bench/train_speed.py                       # u2netp, 320x320, batch 8, 6 timed steps, 2 rounds
    python bench/train_speed.py --ablation            # also clearbg with one setting changed at a time
    python bench/train_speed.py --worker official ... # one measurement (what the driver runs)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "fashion"
RESULTS = ROOT / "bench" / "results"

# name -> (loop, extra --set overrides for clearbg, OMP threads or None for the default)
SETUPS: dict[str, tuple[str, list[str], int | None]] = {
    "official": ("official", [], None),
    "clearbg": ("clearbg", [], None),
}
ABLATION: dict[str, tuple[str, list[str], int | None]] = {
    "official-1thread": ("official", [], 1),
    "clearbg-fp32-nchw": ("clearbg", ["precision=fp32", "channels_last=false"], None),
    "clearbg-fp32-cl": ("clearbg", ["precision=fp32"], None),
    "clearbg-bf16-cl": ("clearbg", ["precision=bf16"], None),
    "clearbg-bf16-cl-1thread": ("clearbg", ["precision=bf16"], 1),
}


# --------------------------------------------------------------------------- the two loops


def official_loop(data: str, size: int, batch: int, steps: int, model_name: str) -> dict:
    """The published U-2-Net training loop, as its script does it."""
    import torch
    from torch import nn

    from clearbg.data.dataset import PairDataset
    from clearbg.models.specs import get_spec

    torch.manual_seed(0)
    net = get_spec(model_name).builder()  # U2NETP(3, 1)
    net.train()
    bce_loss = nn.BCELoss(reduction="mean")  # size_average=True in the original

    def muti_bce_loss_fusion(d0, d1, d2, d3, d4, d5, d6, labels_v):
        losses = [bce_loss(d, labels_v) for d in (d0, d1, d2, d3, d4, d5, d6)]
        return losses[0], sum(losses)

    optimizer = torch.optim.Adam(net.parameters(), lr=0.001, betas=(0.9, 0.999), eps=1e-08, weight_decay=0)
    dataset = PairDataset(data, split=None, size=size)  # resize only (their RescaleT + ToTensorLab)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    times, done = [], 0
    tick = time.perf_counter()
    while done < steps + 1:
        for data_batch in loader:
            inputs, labels = data_batch["image"], data_batch["mask"]
            inputs = inputs / inputs.amax(dim=(1, 2, 3), keepdim=True)  # ToTensorLab: image / max, then mean/std
            inputs = (inputs - mean) / std
            optimizer.zero_grad()
            d0, d1, d2, d3, d4, d5, d6 = net(inputs)
            loss2, loss = muti_bce_loss_fusion(d0, d1, d2, d3, d4, d5, d6, labels)
            loss.backward()
            optimizer.step()
            _ = loss.data.item()
            del d0, d1, d2, d3, d4, d5, d6, loss2, loss
            now = time.perf_counter()
            times.append(now - tick)
            tick = now
            done += 1
            if done >= steps + 1:
                break
    timed = times[1:]
    return {"images_per_s": batch * len(timed) / sum(timed), "step_s": timed}


def clearbg_loop(data: str, size: int, batch: int, steps: int, model_name: str, overrides: list[str]) -> dict:
    from clearbg.train.config import load_config
    from clearbg.train.loop import train

    out = tempfile.mkdtemp(prefix="clearbg-bench-")
    config = load_config(overrides=[
        f"data={data}", f"out={out}", f"model={model_name}", "init=scratch", f"size={size}", f"batch_size={batch}",
        f"max_steps={steps + 1}", "epochs=1000", "val_every=0", "tracking_uri=off", "tensorboard=false", *overrides,
    ])
    result = train(config, progress=False)
    return {"images_per_s": result.images_per_second}


def worker(args) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    kind, overrides, _ = {**SETUPS, **ABLATION}[args.worker]
    if kind == "official":
        out = official_loop(args.data, args.size, args.batch, args.steps, args.model)
    else:
        out = clearbg_loop(args.data, args.size, args.batch, args.steps, args.model, overrides)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["threads"] = torch.get_num_threads()
    print("RESULT " + json.dumps(out), flush=True)


# --------------------------------------------------------------------------- the driver


def dataset(cache: Path, size: int, pairs: int) -> str:
    """A prepared dataset of the first ``pairs`` fashion train pairs (made once)."""
    folder = cache / f"fashion-{pairs}-{size}"
    if (folder / "manifest.parquet").is_file():
        return str(folder)
    import pandas as pd

    from clearbg.data.prepare import PrepareConfig, prepare_dataset

    rows = pd.read_csv(DATA / "manifest.csv")
    rows = rows[rows["split"] == "train"].sort_values("id").head(pairs)
    cache.mkdir(parents=True, exist_ok=True)
    csv_path = cache / f"pairs-{pairs}.csv"
    rows.assign(image=[str(DATA / p) for p in rows["image"]], mask=[str(DATA / p) for p in rows["mask"]]).to_csv(
        csv_path, index=False)
    prepare_dataset(str(csv_path), str(folder), PrepareConfig(sizes=[(size, size)], split=(1.0, 0.0, 0.0)), workers=2)
    return str(folder)


def measure(name: str, args, data: str) -> dict:
    _, _, threads = {**SETUPS, **ABLATION}[name]
    cmd = [sys.executable, __file__, "--worker", name, "--data", data, "--size", str(args.size),
           "--batch", str(args.batch), "--steps", str(args.steps), "--model", args.model]
    env = dict(os.environ)
    if threads:
        cmd += ["--threads", str(threads)]
    started = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    out = json.loads(lines[-1][len("RESULT "):])
    out["load"] = os.getloadavg()[0]
    print(f"  {name:24s} {out['images_per_s']:6.2f} img/s  peak {out['peak_rss_mb']:6.0f} MB  "
          f"({time.time() - started:.0f} s, load {out['load']:.1f})", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="u2netp")
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per measurement (after one warm-up step)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=64, help="training pairs in the prepared dataset")
    parser.add_argument("--ablation", action="store_true", help="also clearbg with one setting changed at a time")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "clearbg-bench-train"))
    parser.add_argument("--data", help="a prepared dataset to use instead of the cached one")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    data = args.data or dataset(Path(args.cache), args.size, args.pairs)
    names = list(SETUPS) + (list(ABLATION) if args.ablation else [])
    runs: dict[str, list[dict]] = {name: [] for name in names}
    print(f"{args.model} {args.size}x{args.size} batch {args.batch}, {args.steps} timed steps x {args.rounds} rounds, "
          f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()})", flush=True)
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}", flush=True)
        for name in names:
            runs[name].append(measure(name, args, data))

    base = statistics.median(run["images_per_s"] for run in runs["official"])
    rows = []
    for name in names:
        speed = statistics.median(run["images_per_s"] for run in runs[name])
        memory = max(run["peak_rss_mb"] for run in runs[name])
        rows.append({"setup": name, "images_per_s": round(speed, 3), "vs_official": round(speed / base, 2),
                     "peak_rss_mb": round(memory), "threads": runs[name][0]["threads"],
                     "runs": " ".join(f"{run['images_per_s']:.2f}" for run in runs[name])})
    print()
    print("| setup | images/s | vs official | peak RSS (MB) | threads |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['setup']} | {row['images_per_s']:.2f} | {row['vs_official']:.2f}x | {row['peak_rss_mb']} | {row['threads']} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "-ablation" if args.ablation else ""
    path = RESULTS / f"train-{args.model}-{args.size}-b{args.batch}-cpu{os.cpu_count()}{suffix}.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
