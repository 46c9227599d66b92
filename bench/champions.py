"""The shipped models against the official weights, on the test splits they never saw.

For each domain (a prepared dataset) and each model, ``clearbg evaluate``'s scoring at full
resolution on the ``test`` split: mean and median IoU, the shares of photos at >= 95/97/99 % IoU
and boundary F; then mean IoU per product type, and an image grid of the hardest test photos
(lowest IoU for the official u2netp) with each model's mask.

Evaluations are cached per (domain, model, precision, weights) in ``--cache``, so adding a model
reruns only that model.

Usage:
    python bench/champions.py --data fashion=data/fashion-320 --data cars=data/cars-320 \\
        --models u2netp,u2net,isnet.general-use,fashion,cars --grid bench/results/champions-hardest.png
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from clearbg.data.manifest import read_manifest
from clearbg.evaluate.run import evaluate_model
from clearbg.evaluate.settings import EvalSettings
from clearbg.imageio import open_image
from clearbg.inference.predictor import Predictor
from clearbg.models.hub import is_checkpoint_path
from clearbg.models.specs import get_spec

REPO = Path(__file__).resolve().parents[1]
SHARES = (0.95, 0.97, 0.99)


def weights_key(model: str) -> str:
    """What identifies the weights: the spec's sha256, or a checkpoint's content hash."""
    if is_checkpoint_path(model):
        return hashlib.sha256(Path(model).read_bytes()).hexdigest()[:12]
    spec = get_spec(model)
    return spec.weights.sha256[:12] if spec.weights else "none"


def evaluation(model: str, dataset: str, domain: str, precision: str, cache: Path) -> pd.DataFrame:
    name = Path(model).parent.parent.name if is_checkpoint_path(model) else get_spec(model).name
    path = cache / f"{domain}-{name}-{precision}-{weights_key(model)}.parquet"
    if path.is_file():
        return pd.read_parquet(path)
    print(f"evaluating {name} on {domain} test ({precision})", file=sys.stderr, flush=True)
    ev = evaluate_model(model, f"{dataset}:test", settings=EvalSettings(precision=precision), progress=True,
                        keep_thumbnails=0)
    table = ev.per_image.copy()
    table.insert(0, "model", name)
    cache.mkdir(parents=True, exist_ok=True)
    table.to_parquet(path, index=False)
    return table


def summary_rows(per_image: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for model, t in per_image.groupby("model", sort=False):
        row = {"model": model, "images": len(t), "mean IoU": t["iou"].mean(), "median IoU": t["iou"].median()}
        row.update({f">= {s:.0%}": (t["iou"] >= s).mean() for s in SHARES})
        row["boundary F"] = t["boundary_f"].mean()
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame, pct: tuple[str, ...] = ()) -> str:
    def cell(column, value):
        if isinstance(value, float):
            return f"{value:.1%}" if column in pct else f"{value:.4f}"
        return str(value)

    lines = ["| " + " | ".join(map(str, table.columns)) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(table.columns))) + "|"]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(cell(c, row[c]) for c in table.columns) + " |")
    return "\n".join(lines)


def _label(tile: Image.Image, text: str) -> Image.Image:
    tile = tile.copy()
    draw = ImageDraw.Draw(tile)
    font = ImageFont.load_default(size=12)
    box = draw.textbbox((3, 3), text, font=font)
    draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=(255, 255, 255))
    draw.text((3, 3), text, fill=(200, 0, 0), font=font)
    return tile


def hardest_grid(per_image: dict[str, pd.DataFrame], models: dict[str, list[str]], k: int, out: Path,
                 baseline: str = "u2netp.official", height: int = 180) -> None:
    """Rows: the k lowest-IoU test photos of the baseline per domain; columns: photo, truth, each
    model's mask labelled with its name and IoU on that photo."""
    rows: list[list[Image.Image]] = []
    for domain, table in per_image.items():
        names = list(dict.fromkeys(table["model"]))
        worst = table[table["model"] == baseline].nsmallest(k, "iou")
        predictors = {name: Predictor(model, precision="fp32") for name, model in zip(names, models[domain])}
        for _, row in worst.iterrows():
            photo = open_image(row["image"]).convert("RGB")
            truth = open_image(row["mask"]).convert("L").point(lambda v: 255 if v >= 128 else 0)
            line = [(photo, row["id"]), (truth.convert("RGB"), "truth")]
            for name, predictor in predictors.items():
                prob = predictor.predict_one(photo)
                mask = Image.fromarray(np.where(prob >= 0.5, 255, 0).astype(np.uint8)).convert("RGB")
                iou = table[(table["model"] == name) & (table["id"] == row["id"])]["iou"].iloc[0]
                short = name.removesuffix(".official").removesuffix(".general-use").removeprefix("u2netp.")
                line.append((mask, f"{short} {iou:.3f}"))
            rows.append([_label(im.resize((max(1, round(im.width * height / im.height)), height)), text)
                         for im, text in line])
    columns = max(map(len, rows))
    widths = [max(line[i].width for line in rows if i < len(line)) for i in range(columns)]
    sheet = Image.new("RGB", (sum(widths) + 4 * columns, len(rows) * (height + 4)), "white")
    for r, line in enumerate(rows):
        x = 0
        for i, im in enumerate(line):
            sheet.paste(im, (x, r * (height + 4)))
            x += widths[i] + 4
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", action="append", required=True, help="DOMAIN=PREPARED_DATASET (repeatable)")
    parser.add_argument("--models", default="u2netp,u2net,isnet.general-use",
                        help="comma-separated model references; DOMAIN:MODEL applies to that domain only")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--cache", type=Path, default=REPO / "bench" / "results" / "champions")
    parser.add_argument("--grid", type=Path, help="write the hardest-photos grid here")
    parser.add_argument("--hardest", type=int, default=4, help="photos per domain in the grid")
    args = parser.parse_args()
    datasets = dict(item.split("=", 1) for item in args.data)
    models: dict[str, list[str]] = {}
    for domain in datasets:
        chosen = []
        for ref in args.models.split(","):
            scope, _, model = ref.rpartition(":") if ref.split(":", 1)[0] in datasets else ("", "", ref)
            if not scope or scope == domain:
                chosen.append(model)
        models[domain] = chosen

    per_image: dict[str, pd.DataFrame] = {}
    for domain, dataset in datasets.items():
        tables = [evaluation(m, dataset, domain, args.precision, args.cache) for m in models[domain]]
        table = pd.concat(tables, ignore_index=True)
        per_image[domain] = table
        print(f"\n### {domain}: test split, {table['id'].nunique()} photos, {args.precision}\n")
        print(markdown(summary_rows(table), pct=tuple(f">= {s:.0%}" for s in SHARES)))
        rows = read_manifest(dataset)
        if "product_type" in rows:
            types = table.merge(rows[["id", "product_type"]], on="id")
            pivot = types.pivot_table(index="product_type", columns="model", values="iou", aggfunc="mean")
            pivot = pivot[list(dict.fromkeys(table["model"]))]
            counts = types[types["model"] == table["model"].iloc[0]].groupby("product_type").size()
            pivot.insert(0, "photos", counts)
            print(f"\nmean IoU per product type ({domain}):\n")
            print(markdown(pivot.reset_index()))
    if args.grid:
        hardest_grid(per_image, models, args.hardest, args.grid)
        print(f"\nhardest photos: {args.grid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
