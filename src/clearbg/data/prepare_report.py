"""``report.html`` of a prepared dataset: what was kept, what was dropped and why, with pictures.

One self-contained file (thumbnails inlined), so it can be mailed or opened from a bucket.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

from clearbg import storage
from clearbg.errors import ClearbgError
from clearbg.imageio import open_image

__all__ = ["REPORT", "outline", "write_prepare_report"]

REPORT = "report.html"
_EXAMPLES = 8
_THUMB_HEIGHT = 160


def outline(photo: Image.Image, mask: Image.Image, color: tuple[int, int, int] = (255, 0, 64)) -> Image.Image:
    """The photo with the mask's border drawn on it, so a misfit mask is visible at a glance.

    Both are first scaled to the thumbnail height, so the line stays visible.
    """
    scale = _THUMB_HEIGHT / photo.height
    size = (max(1, round(photo.width * scale)), _THUMB_HEIGHT)
    result = photo.convert("RGB").resize(size, Image.Resampling.BILINEAR)
    binary = mask.convert("L").resize(size, Image.Resampling.BILINEAR).point(lambda v: 255 if v >= 128 else 0)
    grown = np.asarray(binary.filter(ImageFilter.MaxFilter(3)))
    shrunk = np.asarray(binary.filter(ImageFilter.MinFilter(3)))
    pixels = np.array(result)
    pixels[grown != shrunk] = color
    return Image.fromarray(pixels)


def _thumb(image: Image.Image) -> str:
    scale = _THUMB_HEIGHT / image.height
    small = image.resize((max(1, round(image.width * scale)), _THUMB_HEIGHT), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    small.convert("RGB").save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _load(uri: str) -> Image.Image | None:
    if not uri:
        return None
    try:
        return open_image(storage.read_bytes(uri), name=uri)
    except ClearbgError:
        return None


def _source_thumb(row: pd.Series) -> str:
    photo, mask = _load(row["image"]), _load(row["mask"])
    if photo is not None and mask is not None and photo.size == mask.size:
        return _thumb(outline(photo, mask))
    shown = [im for im in (photo, mask) if im is not None]
    if not shown:
        return ""
    if len(shown) == 1:
        return _thumb(shown[0])
    # Different sizes: show them side by side, each at the thumbnail height.
    a, b = (im.resize((max(1, round(im.width * _THUMB_HEIGHT / im.height)), _THUMB_HEIGHT)) for im in shown)
    both = Image.new("RGB", (a.width + b.width + 4, _THUMB_HEIGHT), (255, 255, 255))
    both.paste(a.convert("RGB"), (0, 0))
    both.paste(b.convert("RGB"), (a.width + 4, 0))
    return _thumb(both)


def _figure(src: str, caption: str) -> str:
    image = f'<img src="{src}" alt="">' if src else '<div class="none">no image</div>'
    return f"<figure>{image}<figcaption>{html.escape(caption)}</figcaption></figure>"


def write_prepare_report(out: str, kept: pd.DataFrame, excluded: pd.DataFrame, info: dict[str, Any]) -> str:
    """Write ``out/report.html``; returns its URI."""
    counts = info["counts"]
    rows = "".join(
        f"<tr><td>{html.escape(reason)}</td><td>{n}</td></tr>"
        for reason, n in sorted(counts["excluded"].items(), key=lambda kv: -kv[1])
    )
    splits = ", ".join(f"{k} {v}" for k, v in sorted(counts["splits"].items()))
    sections = []
    for reason, group in excluded.groupby("reason", sort=True):
        figures = "".join(
            _figure(_source_thumb(row), f"{row['id']}: {row['detail']}") for _, row in group.head(_EXAMPLES).iterrows()
        )
        sections.append(f"<h2>Excluded: {html.escape(str(reason))} ({len(group)})</h2><div class=grid>{figures}</div>")
    if len(kept):
        width, height = info["sizes"][0]
        folder = storage.join(out, f"{width}x{height}")
        sample = kept.sample(min(_EXAMPLES, len(kept)), random_state=0)
        figures = "".join(
            _figure(
                _thumb(outline(open_image(storage.read_bytes(storage.join(folder, r["image"]))),
                               open_image(storage.read_bytes(storage.join(folder, r["mask"]))))),
                f"{r['id']} ({r['split']})",
            )
            for _, r in sample.iterrows()
        )
        sections.insert(0, f"<h2>Kept: a sample at {width}x{height}</h2><div class=grid>{figures}</div>")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>clearbg dataset report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: .3em .8em; text-align: left; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 12px; }}
figure {{ margin: 0; width: 200px; }} figure img {{ max-width: 200px; height: {_THUMB_HEIGHT}px; object-fit: contain; background: #eee; }}
figcaption {{ font-size: 12px; word-wrap: break-word; }} .none {{ height: {_THUMB_HEIGHT}px; background: #eee; }}
</style></head><body>
<h1>Dataset report</h1>
<p>Source: <code>{html.escape(info["source"])}</code>. Sizes: {", ".join(f"{w}x{h}" for w, h in info["sizes"])}.
Created {html.escape(info["created"])}.</p>
<table><tr><th>pairs found</th><td>{counts["pairs"]}</td></tr>
<tr><th>kept</th><td>{counts["kept"]} ({html.escape(splits)})</td></tr>
<tr><th>excluded</th><td>{counts["pairs"] - counts["kept"]}</td></tr></table>
<h2>Excluded by reason</h2><table><tr><th>reason</th><th>pairs</th></tr>{rows}</table>
<p>Every excluded pair is listed in <code>excluded.csv</code>; the red line is the mask's border.</p>
{"".join(sections)}
</body></html>
"""
    uri = storage.join(out, REPORT)
    storage.write_bytes(uri, page.encode())
    return uri
