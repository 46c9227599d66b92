"""How much of a sloppy brush stroke "snap to edges" gets right, on real photos and human masks.

For 4 boundary points of each of the 32 tiny-subset photos (fashion and cars), a model's miss is
simulated (the product side of the boundary cleared inside a disc, for the brush; the background
side filled, for the eraser), and a reviewer's stroke painted over it: 16 px long along the
boundary, radius 18, centred 0.35 radius onto the side being fixed, so it overshoots the edge as a
hurried stroke does. Counted inside the stroke: pixels wrong before the stroke, after a plain
stroke, and after the snapped one. The parameters of clearbg.review.snap were chosen on this run.

    python bench/snap_quality.py [--out bench/results/snap-quality-tiny.csv]
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from clearbg.review.snap import RING_PX, Stroke, snap_stroke, stroke_area

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "snap-quality-tiny.csv"))
    parser.add_argument("--radius", type=float, default=18.0)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    with open(DATA / "index.csv", newline="") as f:
        pairs = [r for r in csv.DictReader(f) if r["tiny"] == "1"]
    for pair in pairs:
        photo = np.asarray(Image.open(DATA / pair["image"]).convert("RGB"))
        truth = np.asarray(Image.open(DATA / pair["mask"]).convert("L")) >= 128
        inside = ndimage.distance_transform_edt(truth) - ndimage.distance_transform_edt(~truth)
        gy, gx = np.gradient(ndimage.gaussian_filter(inside, 2))
        ys, xs = np.nonzero(truth ^ ndimage.binary_erosion(truth))
        for _ in range(4):
            k = rng.integers(len(ys))
            y, x = ys[k], xs[k]
            normal = np.array([gx[y, x], gy[y, x]]) / (np.hypot(gx[y, x], gy[y, x]) + 1e-9)
            tangent = np.array([-normal[1], normal[0]])
            for tool in ("brush", "eraser"):
                centre = np.array([x + 0.5, y + 0.5]) + (1 if tool == "brush" else -1) * 0.35 * args.radius * normal
                points = (tuple(centre - 8 * tangent), tuple(centre + 8 * tangent))
                stroke = Stroke(points, args.radius, tool)
                box = stroke.box(truth.shape[1], truth.shape[0], RING_PX)
                x0, y0, x1, y1 = box
                area, want = stroke_area(stroke, box), truth[y0:y1, x0:x1]
                before = np.where(want, 255, 0).astype(np.uint8)
                before[stroke_area(Stroke(points, args.radius * 0.8, tool), box)] = 0 if tool == "brush" else 255
                plain = before.copy()
                plain[area] = stroke.value
                start = time.perf_counter()
                snapped = snap_stroke(photo[y0:y1, x0:x1], before, stroke, box)
                ms = (time.perf_counter() - start) * 1000
                wrong = [int(((m >= 128) != want)[area].sum()) for m in (before, plain, snapped)]
                rows.append({"photo": pair["id"], "domain": pair["domain"], "tool": tool, "stroke_px": int(area.sum()),
                             "wrong_before": wrong[0], "wrong_plain": wrong[1], "wrong_snapped": wrong[2],
                             "snap_ms": round(ms, 1)})
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"{'strokes':>12s} {'wrong before':>13s} {'plain brush':>12s} {'snapped':>8s} {'ms/stroke':>10s}")
    for label, subset in (("fashion", "fashion"), ("cars", "cars"), ("all", None)):
        chosen = [r for r in rows if subset is None or r["domain"] == subset]
        total = {k: sum(r[k] for r in chosen) for k in ("wrong_before", "wrong_plain", "wrong_snapped")}
        print(f"{label:>8s} {len(chosen):3d} {total['wrong_before']:13d} {total['wrong_plain']:12d} "
              f"{total['wrong_snapped']:8d} {np.median([r['snap_ms'] for r in chosen]):10.1f}")


if __name__ == "__main__":
    main()
