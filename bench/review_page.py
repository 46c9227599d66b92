"""What the review page costs a reviewer, measured in Chromium against a real ``clearbg review``.

For each of N real fashion photos whose "predicted" mask misses a piece of the product (the
human mask with a disc cut out at the product's edge), a scripted reviewer does what a person
does: waits for the item, paints one snapped brush stroke over the miss, saves. It records the
page's own latencies (the snapped stroke's round trip; save until the next item is ready) and
the wrong pixels inside the stroke before, with a plain brush, and snapped. Human think time is
not in these numbers: they are the tool's share of a correction.

Also writes the README's screenshot of the page (``docs/review-page.jpg``).

    python bench/review_page.py [--n 8] [--out bench/results/review-page-cpu2.csv]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from clearbg.review import ReviewQueue
from clearbg.review.snap import Stroke, stroke_area

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "fashion"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def right_edge(truth: np.ndarray) -> tuple[int, int]:
    rows = np.nonzero(truth.any(axis=1))[0]
    y = int(rows[len(rows) // 3])
    return int(np.nonzero(truth[y])[0].max()), y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "review-page-cpu2.csv"))
    parser.add_argument("--screenshot", default=str(ROOT / "docs" / "review-page.jpg"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    names = sorted(p.stem for p in (DATA / "masks").glob("*.png"))[100:100 + args.n]
    work = Path(tempfile.mkdtemp(prefix="clearbg-review-bench-"))
    queue = ReviewQueue(str(work / "queue.db"))
    truths = {}
    for i, name in enumerate(names):
        truth = np.asarray(Image.open(DATA / "masks" / f"{name}.png")) >= 128
        predicted = np.clip(ndimage.gaussian_filter(truth * 255.0, 1.5), 0, 255).astype(np.uint8)
        x, y = right_edge(truth)
        shape = truth.shape
        predicted[stroke_area(Stroke(((x - 10.0, y + 0.5),), 25.0, "eraser"), (0, 0, shape[1], shape[0]))] = 0
        item, _ = queue.enqueue((DATA / "images" / f"{name}.jpg").read_bytes(), predicted, score=0.5 + i / 1000,
                                model="u2netp.official@309c8469", source=f"fashion/{name}.jpg", threshold=0.93)
        truths[item.id] = truth
    queue.close()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "clearbg", "review", "--queue", str(work / "queue.db"),
                               "--port", str(port), "--log-level", "warning"], env=os.environ)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(url + "/healthz", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    rows = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 820})
            page.goto(url + "/?reviewer=bench")
            page.wait_for_function("() => document.body.dataset.state === 'ready'", timeout=60_000)
            page.keyboard.press("s")
            for _ in range(3):
                page.keyboard.press("]")
            for k in range(len(names)):
                state = page.evaluate("window.review.state()")
                truth = truths[state["id"]]
                x, y = right_edge(truth)
                points = [(x - 8.0, y - 30.0), (x - 8.0, y), (x - 8.0, y + 30.0)]
                client = [page.evaluate("([x, y]) => window.review.imageToClient(x, y)", list(p)) for p in points]
                page.mouse.move(*client[0])
                page.mouse.down()
                for cx, cy in client[1:]:
                    page.mouse.move(cx, cy, steps=4)
                start = time.perf_counter()
                page.mouse.up()
                page.wait_for_function("() => document.body.dataset.state === 'ready'")
                snap_ms = (time.perf_counter() - start) * 1000
                if k == 0:
                    page.screenshot(path=str(work / "page.png"))
                stroke = page.evaluate("window.review.state()")["lastStroke"]
                start = time.perf_counter()
                page.keyboard.press("Control+Enter")
                page.wait_for_function(f"() => (document.body.dataset.item !== {json.dumps(state['id'])} && "
                                       "document.body.dataset.state === 'ready') || document.body.dataset.state === 'decided'")
                save_ms = (time.perf_counter() - start) * 1000
                with ReviewQueue(str(work / "queue.db")) as q:
                    item = q.get(state["id"])
                    before = np.asarray(Image.open(io.BytesIO(q.read(item.mask))))
                    after = np.asarray(Image.open(io.BytesIO(q.read(item.corrected))))
                area = stroke_area(Stroke(tuple(map(tuple, stroke["points"])), stroke["radius"], "brush"),
                                   (0, 0, truth.shape[1], truth.shape[0]))
                plain = before.copy()
                plain[area] = 255
                wrong = [int(((m >= 128) != truth)[area].sum()) for m in (before, plain, after)]
                rows.append({"photo": item.source, "snap_ms": round(snap_ms), "save_ms": round(save_ms), "stroke_px": int(area.sum()),
                             "wrong_before": wrong[0], "wrong_plain_brush": wrong[1], "wrong_snapped": wrong[2]})
                print(rows[-1], flush=True)
            browser.close()
    finally:
        server.terminate()
        server.wait()
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    Image.open(work / "page.png").convert("RGB").save(args.screenshot, quality=82, optimize=True)
    med = {k: float(np.median([r[k] for r in rows])) for k in rows[0] if k != "photo"}
    total = {k: sum(r[k] for r in rows) for k in ("wrong_before", "wrong_plain_brush", "wrong_snapped")}
    print(f"median ms: snap {med['snap_ms']:.0f}, save {med['save_ms']:.0f}; wrong pixels in strokes: "
          f"before {total['wrong_before']}, plain brush {total['wrong_plain_brush']}, snapped {total['wrong_snapped']}")


if __name__ == "__main__":
    main()
