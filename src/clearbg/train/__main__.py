"""Worker entry point: ``python -m clearbg.train --config cfg.yaml --set key=value ...``.

This is what ``torchrun`` (and ``clearbg train --nproc N``) starts in every worker process:

    python -m torch.distributed.run --standalone --nproc_per_node 2 --max-restarts 1 \\
        -m clearbg.train --data ds --set max_steps=100 --result-json out.json

It builds the :class:`~clearbg.train.config.TrainConfig` exactly as ``clearbg train`` does (YAML
file first, then ``--set`` overrides, then the named flags) and calls
:func:`clearbg.train.loop.train`, which joins the process group itself. Rank 0 prints the result
as one JSON line (and writes it to ``--result-json``); an interrupted run restarted by torchrun
continues from its last checkpoint because ``resume`` defaults to ``"auto"``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch.distributed.elastic.multiprocessing.errors import record

from clearbg.errors import ClearbgError

# Named flags are shorthands for --set; each maps to one TrainConfig field.
_FLAGS = {
    "data": "data", "out": "out", "run_name": "run_name", "model": "model", "init": "init",
    "epochs": "epochs", "max_steps": "max_steps", "batch_size": "batch_size", "lr": "lr",
    "size": "size", "device": "device", "resume": "resume", "seed": "seed",
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the worker's command line (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m clearbg.train",
                                     description="Train a clearbg model (one process, or one torchrun worker).")
    parser.add_argument("--config", help="YAML file with TrainConfig fields")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set lr=3e-4 --set loss.iou=0.5 (repeatable)")
    for flag in _FLAGS:
        parser.add_argument(f"--{flag.replace('_', '-')}", dest=flag, default=None)
    parser.add_argument("--result-json", help="rank 0 writes the TrainResult here as JSON")
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace):
    """The TrainConfig for parsed arguments: YAML, then --set, then named flags (last wins)."""
    from clearbg.train.config import load_config

    overrides = list(args.overrides)
    overrides += [f"{field}={getattr(args, flag)}" for flag, field in _FLAGS.items() if getattr(args, flag) is not None]
    return load_config(args.config, overrides)


def result_to_dict(result: Any) -> dict[str, Any]:
    """A TrainResult as plain JSON-able data (paths as strings)."""
    data = dataclasses.asdict(result) if dataclasses.is_dataclass(result) else dict(vars(result))
    return json.loads(json.dumps(data, default=str))


@record  # torchrun collects the traceback of a failed worker into its error report
def main(argv: Sequence[str] | None = None) -> int:
    """Run one training process; returns the exit code (0 ok, 2 for a clearbg error)."""
    from clearbg.train.process_group import cleanup, is_main

    args = parse_args(argv)
    try:
        config = build_config(args)
        from clearbg.train.loop import train

        result = train(config)
    except ClearbgError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        main_rank = is_main()
        cleanup()
    if main_rank:
        summary = result_to_dict(result)
        print(json.dumps({"clearbg.train.result": summary}), flush=True)
        if args.result_json:
            path = Path(args.result_json)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_text(json.dumps(summary, indent=1))
            tmp.replace(path)
    return 0


def _configure_logging() -> None:
    # Rank 0 tells the story (new run / resuming at step N / epoch lines); the others only warn.
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(level=logging.INFO if rank == "0" else logging.WARNING,
                        format=f"%(asctime)s [rank {rank}] %(name)s: %(message)s")


if __name__ == "__main__":
    _configure_logging()
    sys.exit(main())
