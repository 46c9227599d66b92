"""The evaluation report: one self-contained HTML page and the same numbers as JSON/CSV.

``write_report`` turns one :class:`~clearbg.evaluate.run.Evaluation` (or two, side by side)
into ``report.html``: headline figures, tables overall and per group, an IoU histogram and the
share of images above every IoU, a per-group quality-band chart, and a grid of the worst images
(photo, truth, prediction and an error overlay: extra pixels red, missed pixels blue). With two
models it adds deltas, a paired per-image scatter and the images where the second model lost
most. Everything is inline (base64 PNG/JPEG, no external URL), so the file can be mailed,
attached to an MLflow run or opened offline. Thumbnails are small (192 px long side).

The charts are drawn by :mod:`clearbg.evaluate.charts`, the thumbnails by
:mod:`clearbg.evaluate.tiles`; :func:`clearbg.evaluate.tracking.log_evaluation` logs a report
folder to MLflow.

Example:
    >>> ev = evaluate_model("u2netp", "data/fashion-320:test")  # doctest: +SKIP
    >>> write_report([ev], "eval/u2netp")  # doctest: +SKIP
    PosixPath('eval/u2netp/report.html')
"""

from __future__ import annotations

import html
import json
import os
import re
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from clearbg.errors import ClearbgError
from clearbg.evaluate.charts import (
    MODEL_COLOURS,
    delta_chart,
    group_chart,
    histogram_chart,
    scatter_chart,
    share_chart,
)
from clearbg.evaluate.run import GROUP_COLUMN, Evaluation
from clearbg.evaluate.tiles import FALSE_NEGATIVE, FALSE_POSITIVE, CaseTiles
from clearbg.imageio import atomic_write_bytes

__all__ = ["REPORT_FILE", "summary_table", "write_report"]

REPORT_FILE = "report.html"
COMPARISON_CSV, COMPARISON_JSON = "comparison.csv", "comparison.json"

# (key, label, format, higher is better) of the figures shown in tables.
_FIGURES = (
    ("n", "images", "{:.0f}", None),
    ("iou_mean", "mean IoU", "{:.4f}", True),
    ("iou_median", "median IoU", "{:.4f}", True),
    ("iou_pooled", "pooled IoU", "{:.4f}", True),
    ("share_iou_95", "IoU ≥ 95 %", "{:.1%}", True),
    ("share_iou_97", "IoU ≥ 97 %", "{:.1%}", True),
    ("share_iou_99", "IoU ≥ 99 %", "{:.1%}", True),
    ("dice_mean", "mean Dice", "{:.4f}", True),
    ("precision_mean", "precision", "{:.4f}", True),
    ("recall_mean", "recall", "{:.4f}", True),
    ("boundary_f_mean", "boundary F", "{:.4f}", True),
    ("mae_mean", "MAE", "{:.4f}", False),
    ("error_regions_mean", "error regions / image", "{:.2f}", False),
)
_GROUP_FIGURES = (
    "n",
    "iou_mean",
    "iou_median",
    "share_iou_95",
    "share_iou_97",
    "share_iou_99",
    "boundary_f_mean",
    "mae_mean",
    "error_regions_mean",
)
_PAIRED_GROUP_FIGURES = ("iou_mean", "share_iou_95", "share_iou_99", "boundary_f_mean")


# --------------------------------------------------------------------------- entry points


def write_report(
    evaluations: Sequence[Evaluation],
    out_dir: str | os.PathLike,
    *,
    worst_k: int = 12,
    title: str | None = None,
) -> Path:
    """Write ``report.html`` and the numbers behind it into ``out_dir``.

    One model: ``summary.json``, ``per_image.csv`` and ``thumbnails.npz`` beside the report
    (``Evaluation.load(out_dir)`` reads them back). Two: one such folder per model (named after
    it) plus ``comparison.csv`` (paired per-image IoU) and ``comparison.json`` (deltas overall
    and per group); the first model is the baseline the second is compared with.

    Args:
        evaluations: one or two evaluations (two should be of the same data).
        out_dir: a local folder (created if needed).
        worst_k: how many images each worst-case grid shows.
        title: the page title (default: the model names and the data).

    Returns:
        The path of ``report.html``.

    Raises:
        ClearbgError: not one or two evaluations.

    Example:
        >>> write_report([champion, challenger], "eval/compare", title="champion vs challenger")  # doctest: +SKIP
        PosixPath('eval/compare/report.html')
    """
    evaluations = list(evaluations)
    if len(evaluations) not in (1, 2):
        raise ClearbgError(f"a report shows one model or two side by side, got {len(evaluations)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    folders = _model_folders(evaluations)
    for evaluation, folder in zip(evaluations, folders, strict=True):
        evaluation.save(str(out / folder) if folder else str(out))
    paired = _paired(*evaluations) if len(evaluations) == 2 else None
    if paired is not None:
        atomic_write_bytes(out / COMPARISON_CSV, paired.to_csv(index=False).encode())
        comparison = _comparison(evaluations, paired)
        atomic_write_bytes(out / COMPARISON_JSON, json.dumps(comparison, indent=2).encode())
    page = _Page(evaluations, paired, worst_k=worst_k, title=title, folders=folders).render()
    path = out / REPORT_FILE
    atomic_write_bytes(path, page.encode())
    return path


def summary_table(evaluations: Sequence[Evaluation]) -> str:
    """The headline figures as plain text: overall (with the change when there are two models),
    then mean IoU and the share at >= 95 % IoU per group.

    Example:
        >>> print(summary_table([ev]))  # doctest: +SKIP
        figure                u2netp
        images                   103
        mean IoU              0.9479
        ...
    """
    evaluations = list(evaluations)
    summaries = [e.summary() for e in evaluations]
    names = [e.model for e in evaluations]
    width = max(17, *(len(n) + 2 for n in names))
    head = f"{'figure':<22}" + "".join(f"{n:>{width}}" for n in names) + ("      change" if len(names) == 2 else "")
    lines = [head]
    for key, label, _, _ in _FIGURES:
        values = [s["overall"].get(key) for s in summaries]
        line = f"{label:<22}" + "".join(f"{_fmt(key, v):>{width}}" for v in values)
        if len(values) == 2 and key != "n":
            change = values[1] - values[0]
            text = (
                f"{change:+.1%}"
                if key.startswith("share_")
                else f"{change:+.2f}"
                if key == "error_regions_mean"
                else f"{change:+.4f}"
            )
            line += f"{text:>12}"
        lines.append(line)
    groups = sorted({g for s in summaries for g in s["groups"]})
    if len(groups) > 1:
        lines += ["", "per group: mean IoU / share at IoU >= 95 %"]
        label_width = max(22, *(len(g) + 7 for g in groups))
        for group in groups:
            figures = [s["groups"].get(group, {}) for s in summaries]
            n = max(f.get("n", 0) for f in figures)
            cells = "".join(
                f"{_fmt('iou_mean', f.get('iou_mean')) + ' / ' + _fmt('share_iou_95', f.get('share_iou_95')):>{width}}"
                if f
                else f"{'-':>{width}}"
                for f in figures
            )
            lines.append(f"{f'{group} ({n})':<{label_width}}{cells}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- files and numbers


def _slug(name: str) -> str:
    """A folder name for a model name: ``models:/shop@champion`` -> ``models_shop_champion``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"


def _model_folders(evaluations: list[Evaluation]) -> list[str]:
    if len(evaluations) == 1:
        return [""]
    names = [_slug(e.model) for e in evaluations]
    if names[0] == names[1]:
        names = [f"{n}-{i + 1}" for i, n in enumerate(names)]
    return names


def _paired(first: Evaluation, second: Evaluation) -> pd.DataFrame | None:
    """Per-image scores of both models on the images both scored (id order); None if none."""
    keep = ["id", GROUP_COLUMN, "iou", "boundary_f", "error_regions"]
    a, b = first.per_image[keep], second.per_image[keep].drop(columns=[GROUP_COLUMN])
    both = a.merge(b, on="id", suffixes=("_a", "_b"), how="inner")
    if both.empty:
        return None
    both["iou_delta"] = both["iou_b"] - both["iou_a"]
    return both.sort_values("id", kind="stable").reset_index(drop=True)


def _comparison(evaluations: list[Evaluation], paired: pd.DataFrame) -> dict[str, Any]:
    """Overall and per-group figures of both models on the paired images, with deltas."""
    from clearbg.evaluate.run import aggregate

    ids = set(paired["id"])
    rows = [e.per_image[e.per_image["id"].isin(ids)] for e in evaluations]

    def side_by_side(a: dict[str, float], b: dict[str, float]) -> dict[str, dict[str, float]]:
        return {k: {"a": a[k], "b": b[k], "delta": b[k] - a[k]} for k in a if k in b}

    groups = sorted(set(paired[GROUP_COLUMN]))
    return {
        "a": evaluations[0].model,
        "b": evaluations[1].model,
        "data": [e.data for e in evaluations],
        "n_paired": int(len(paired)),
        "b_better": int((paired["iou_delta"] > 0).sum()),
        "b_worse": int((paired["iou_delta"] < 0).sum()),
        "overall": side_by_side(aggregate(rows[0]), aggregate(rows[1])),
        "groups": {
            g: side_by_side(
                aggregate(rows[0][rows[0][GROUP_COLUMN] == g]), aggregate(rows[1][rows[1][GROUP_COLUMN] == g])
            )
            for g in groups
        },
    }


# --------------------------------------------------------------------------- the page


_CSS = """
:root { --ink:#1d2330; --muted:#667085; --line:#e3e6ea; --bg:#f6f7f9; --a:%(a)s; --b:%(b)s; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font:14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width:1240px; margin:0 auto; padding:28px 28px 60px; }
h1 { font-size:24px; margin:0 0 4px; } h2 { font-size:18px; margin:34px 0 10px; }
h3 { font-size:15px; margin:18px 0 8px; }
.sub { color:var(--muted); margin:0 0 6px; } code { font-size:12.5px; background:#eef0f3; padding:1px 4px; border-radius:4px; }
nav { margin:14px 0 6px; } nav a { margin-right:14px; color:var(--a); text-decoration:none; font-weight:500; }
.panel { background:#fff; border:1px solid var(--line); border-radius:10px; padding:16px 18px; }
.cards { display:grid; grid-template-columns:repeat(auto-fit, minmax(150px, 1fr)); gap:12px; margin-top:16px; }
.card { background:#fff; border:1px solid var(--line); border-radius:10px; padding:12px 14px; }
.card .label { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
.card .value { font-size:26px; font-weight:650; margin-top:2px; }
.card .delta { font-size:14px; font-weight:600; }
.card .pair { font-size:12px; color:var(--muted); margin-top:2px; }
.up { color:#1f7a4a; } .down { color:#c0392b; } .same { color:var(--muted); }
table { border-collapse:collapse; width:100%%; background:#fff; font-variant-numeric:tabular-nums; }
th, td { padding:6px 10px; border-bottom:1px solid var(--line); text-align:right; white-space:nowrap; }
th:first-child, td:first-child { text-align:left; }
thead th { background:#f0f2f5; font-weight:600; font-size:12.5px; position:sticky; top:0; }
tbody tr:hover { background:#fafbfc; }
.tablewrap { border:1px solid var(--line); border-radius:10px; overflow:auto; }
.charts { display:grid; grid-template-columns:repeat(auto-fit, minmax(480px, 1fr)); gap:14px; }
.charts img, .chart img, .stack img { width:100%%; height:auto; display:block; }
.overview { display:grid; grid-template-columns:minmax(360px, 560px) minmax(420px, 1fr); gap:14px; align-items:start; }
.stack { display:grid; gap:14px; }
.chart { max-width:900px; }
.ma { color:var(--a); font-weight:600; } .mb { color:var(--b); font-weight:600; }
.ma, .mb { overflow-wrap:anywhere; } th .ma, th .mb { white-space:normal; }
.grid { display:grid; grid-template-columns:repeat(auto-fill, minmax(%(card)dpx, 1fr)); gap:14px; }
.case { background:#fff; border:1px solid var(--line); border-radius:10px; padding:10px; }
.case .tiles { display:flex; gap:6px; align-items:flex-start; }
.case figure { margin:0; text-align:center; flex:0 1 144px; min-width:0; }
.case figure img { width:100%%; height:auto; display:block; border-radius:4px; background:#eee;
                   image-rendering:auto; }
.case figcaption { font-size:11px; color:var(--muted); margin-top:3px; }
.case .caption { font-size:12.5px; margin-bottom:8px; display:flex; justify-content:space-between; gap:8px; flex-wrap:wrap; }
.rows { display:grid; gap:12px; }
.case.wide { display:flex; gap:18px; align-items:flex-start; }
.case.wide .tiles { flex:0 1 auto; }
.case.wide .info { flex:1 0 220px; display:flex; flex-direction:column; gap:8px; font-size:12.5px; }
.case.wide .info b { font-family:ui-monospace, Menlo, Consolas, monospace; }
table.mini { width:auto; } table.mini th, table.mini td { padding:3px 8px; font-size:12.5px; }
.case .caption b { font-family:ui-monospace, Menlo, Consolas, monospace; font-size:12.5px; }
.tag { display:inline-block; background:#eef0f3; border-radius:10px; padding:0 8px; font-size:11.5px; color:#444; }
.legend span { display:inline-block; width:12px; height:12px; border-radius:2px; vertical-align:-2px; margin:0 4px 0 12px; }
details { margin-top:10px; } summary { cursor:pointer; color:var(--muted); }
dl { display:grid; grid-template-columns:max-content 1fr; gap:4px 18px; margin:0; }
dt { font-weight:600; } dd { margin:0; color:#333; }
"""


def _fmt(key: str, value: Any) -> str:
    spec = next((f for k, _, f, _ in _FIGURES if k == key), "{:.4f}")
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return spec.format(value)


def _delta(key: str, a: float, b: float) -> str:
    """A coloured change: green when the second model is better, red when worse."""
    higher_better = next((h for k, _, _, h in _FIGURES if k == key), True)
    change = b - a
    if higher_better is None or abs(change) < 1e-12:
        return f'<span class="same">{"±0" if higher_better is not None else ""}</span>'
    good = (change > 0) == higher_better
    if key.startswith("share_"):
        text = f"{change:+.1%}"
    elif key == "error_regions_mean":
        text = f"{change:+.0f}" if float(change).is_integer() else f"{change:+.2f}"
    else:
        text = f"{change:+.4f}"
    return f'<span class="{"up" if good else "down"}">{text}</span>'


def _shade(key: str, value: float) -> str:
    """A background tint for a group cell: how far it is from its metric's best value."""
    if key in ("iou_mean", "iou_median", "boundary_f_mean"):
        badness = min(1.0, max(0.0, (1.0 - value) / 0.15))
    elif key.startswith("share_iou"):
        badness = min(1.0, max(0.0, 1.0 - value))
    else:
        return ""
    red, green = np.array([250, 214, 210]), np.array([214, 240, 222])
    r, g, b = (green + (red - green) * badness).astype(int)
    return f' style="background:rgb({r},{g},{b})"'


class _Page:
    def __init__(
        self,
        evaluations: list[Evaluation],
        paired: pd.DataFrame | None,
        *,
        worst_k: int,
        title: str | None,
        folders: list[str],
    ) -> None:
        self.evs = evaluations
        self.paired = paired
        self.worst_k = worst_k
        self.folders = folders
        self.summaries = [e.summary(worst_k) for e in evaluations]
        names = " vs ".join(e.model for e in evaluations)
        self.title = title or f"Evaluation: {names} on {evaluations[0].data}"
        groups = set()
        for s in self.summaries:
            groups.update(s["groups"])
        # Largest groups first: they carry the mean.
        size = {g: max(s["groups"].get(g, {}).get("n", 0) for s in self.summaries) for g in groups}
        self.groups = sorted(groups, key=lambda g: (-size[g], g))

    # ----------------------------------------------------------------- pieces

    def _model(self, i: int) -> str:
        cls = "ma" if i == 0 else "mb"
        # Checkpoint paths are long: let them wrap after a slash (table heads included, see .ma).
        return f'<span class="{cls}">{html.escape(self.evs[i].model).replace("/", "/<wbr>")}</span>'

    def header(self) -> str:
        first = self.evs[0]
        s = first.settings
        models = " and ".join(self._model(i) for i in range(len(self.evs)))
        datas = sorted({e.data for e in self.evs})
        failed = sum(len(e.failed) for e in self.evs)
        when = time.strftime("%Y-%m-%d %H:%M")
        sections = ["overview", "groups"]
        if self.paired is not None:
            sections.append("comparison")
        sections += ["worst", "about"]
        nav = "".join(f'<a href="#{k}">{k}</a>' for k in sections)
        return (
            f"<h1>{html.escape(self.title)}</h1>"
            f'<p class="sub">{models} on <code>{"</code>, <code>".join(html.escape(d) for d in datas)}</code> · '
            f"{self.summaries[0]['n']} images{f' · <b>{failed} could not be scored</b>' if failed else ''} · "
            f"full photo resolution, threshold {s.get('threshold', 0.5)}, boundary tolerance "
            f"{s.get('boundary_tolerance', 3)} px, {html.escape(str(s.get('precision', '?')))} on "
            f"{html.escape(str(s.get('device', '?')))} · {when}</p><nav>{nav}</nav>"
        )

    def cards(self) -> str:
        keys = (
            "iou_mean",
            "iou_median",
            "share_iou_95",
            "share_iou_97",
            "share_iou_99",
            "boundary_f_mean",
            "error_regions_mean",
        )
        labels = {k: lab for k, lab, _, _ in _FIGURES}
        out = []
        for key in keys:
            values = [s["overall"].get(key) for s in self.summaries]
            if len(values) == 1:
                body = f'<div class="value">{_fmt(key, values[0])}</div>'
            else:
                body = (
                    f'<div class="value">{_fmt(key, values[1])}</div>'
                    f'<div class="delta">{_delta(key, values[0], values[1])}</div>'
                    f'<div class="pair">{self._model(1)}; {self._model(0)}: {_fmt(key, values[0])}</div>'
                )
            out.append(f'<div class="card"><div class="label">{labels[key]}</div>{body}</div>')
        return f'<div class="cards">{"".join(out)}</div>'

    def overall_table(self) -> str:
        heads = "".join(f"<th>{self._model(i)}</th>" for i in range(len(self.evs)))
        if len(self.evs) == 2:
            heads += "<th>change</th>"
        rows = []
        for key, label, _, _ in _FIGURES:
            values = [s["overall"].get(key) for s in self.summaries]
            cells = "".join(f"<td>{_fmt(key, v)}</td>" for v in values)
            if len(values) == 2:
                cells += f"<td>{_delta(key, values[0], values[1])}</td>"
            rows.append(f"<tr><td>{label}</td>{cells}</tr>")
        note = ""
        if self.paired is not None and len(self.paired) != max(s["n"] for s in self.summaries):
            note = f'<p class="sub">Paired views use the {len(self.paired)} images both models scored.</p>'
        return f'<div class="tablewrap"><table><thead><tr><th>overall</th>{heads}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>{note}'

    def group_table(self) -> str:
        labels = {k: lab for k, lab, _, _ in _FIGURES}
        if len(self.evs) == 1:
            head = "".join(f"<th>{labels[k]}</th>" for k in _GROUP_FIGURES)
            rows = []
            for g in self.groups:
                figures = self.summaries[0]["groups"].get(g, {})
                cells = "".join(
                    f"<td{_shade(k, figures.get(k, 0.0))}>{_fmt(k, figures.get(k))}</td>" for k in _GROUP_FIGURES
                )
                rows.append(f"<tr><td>{html.escape(g)}</td>{cells}</tr>")
            overall = self.summaries[0]["overall"]
            cells = "".join(f"<td><b>{_fmt(k, overall.get(k))}</b></td>" for k in _GROUP_FIGURES)
            rows.append(f"<tr><td><b>all</b></td>{cells}</tr>")
            return f'<div class="tablewrap"><table><thead><tr><th>group</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
        top = "".join(f'<th colspan="3" style="text-align:center">{labels[k]}</th>' for k in _PAIRED_GROUP_FIGURES)
        sub = "".join("<th>A</th><th>B</th><th>Δ</th>" for _ in _PAIRED_GROUP_FIGURES)
        rows = []
        for g in [*self.groups, None]:
            figs = [s["overall"] if g is None else s["groups"].get(g, {}) for s in self.summaries]
            n = (
                " / ".join(_fmt("n", f.get("n", 0)) for f in figs)
                if figs[0].get("n") != figs[1].get("n")
                else _fmt("n", figs[0].get("n", 0))
            )
            cells = ""
            for k in _PAIRED_GROUP_FIGURES:
                a, b = figs[0].get(k), figs[1].get(k)
                delta = _delta(k, a, b) if a is not None and b is not None else "–"
                cells += f"<td{_shade(k, a or 0.0)}>{_fmt(k, a)}</td><td{_shade(k, b or 0.0)}>{_fmt(k, b)}</td><td>{delta}</td>"
            name = "<b>all</b>" if g is None else html.escape(g)
            rows.append(f"<tr><td>{name}</td><td>{n}</td>{cells}</tr>")
        legend = f'<p class="sub">A = {self._model(0)}, B = {self._model(1)}; Δ = B − A (green: B better).</p>'
        return (
            f'{legend}<div class="tablewrap"><table><thead><tr><th rowspan="2">group</th><th rowspan="2">images</th>{top}</tr>'
            f"<tr>{sub}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
        )

    def _case_html(self, case: CaseTiles, models: list[int], caption: str) -> str:
        tiles = [("photo", case.photo_tile()), ("truth", case.truth_tile())]
        for i in models:
            prob, errors = case.prediction_tiles(self.evs[i])
            tag = "" if len(self.evs) == 1 else f" {'AB'[i]}"
            tiles += [(f"prediction{tag}", prob), (f"errors{tag}", errors)]
        figures = "".join(
            f'<figure><img src="{src}" alt="{html.escape(label)} of {html.escape(case.id)}" loading="eager">'
            f"<figcaption>{label}</figcaption></figure>"
            for label, src in tiles
        )
        problem = f'<div class="sub">{html.escape(case.problem)}</div>' if case.problem else ""
        name = f'<span><b>{html.escape(case.id)}</b> <span class="tag">{html.escape(case.group)}</span></span>'
        if len(models) == 1:
            return (
                f'<div class="case"><div class="caption">{name}<span>{caption}</span></div>'
                f'<div class="tiles">{figures}</div>{problem}</div>'
            )
        # Two models: one case per row, the scores of both beside the tiles.
        return (
            f'<div class="case wide"><div class="tiles">{figures}</div>'
            f'<div class="info">{name}{caption}{problem}</div></div>'
        )

    def _pair_scores(self, image_id: str) -> str:
        """A small table of both models' scores on one image."""
        a, b = self._scores(image_id, 0), self._scores(image_id, 1)
        rows = ""
        for key, label in (("iou", "IoU"), ("boundary_f", "boundary F"), ("error_regions", "error regions")):
            if key in a and key in b:
                fmt = "{:.0f}" if key == "error_regions" else "{:.3f}"
                change = _delta(key + "_mean" if key == "error_regions" else "iou_mean", a[key], b[key])
                rows += f"<tr><td>{label}</td><td>{fmt.format(a[key])}</td><td>{fmt.format(b[key])}</td><td>{change}</td></tr>"
        return (
            f'<table class="mini"><thead><tr><th></th><th class="ma">A</th><th class="mb">B</th><th>Δ</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>"
        )

    def _scores(self, image_id: str, i: int) -> dict[str, float]:
        frame = self.evs[i].per_image
        row = frame.loc[frame["id"] == image_id]
        return {} if row.empty else row.iloc[0].to_dict()

    def worst(self) -> str:
        legend = (
            f'<p class="sub legend">Errors: <span style="background:rgb{FALSE_POSITIVE}"></span>kept but background '
            f'<span style="background:rgb{FALSE_NEGATIVE}"></span>product but dropped; the kept product in colour.</p>'
        )
        if len(self.evs) == 1:
            cases = []
            for image_id in self.summaries[0]["worst"]:
                m = self._scores(image_id, 0)
                extra = (
                    f"IoU <b>{m['iou']:.3f}</b> · boundary F {m['boundary_f']:.3f} · "
                    f"{int(m['error_regions'])} error regions"
                )
                cases.append(self._case_html(CaseTiles(image_id, self.evs), [0], extra))
            return f'<h3>The {len(cases)} lowest-IoU images</h3>{legend}<div class="grid">{"".join(cases)}</div>'
        paired = self.paired
        parts = [legend]
        if paired is not None:
            drops = paired[paired["iou_delta"] < 0].sort_values(["iou_delta", "id"]).head(self.worst_k)
            lowest = (
                paired.assign(low=paired[["iou_a", "iou_b"]].min(axis=1)).sort_values(["low", "id"]).head(self.worst_k)
            )
            for heading, frame in (
                (f"Largest drops from A to B ({len(drops)})", drops),
                (f"Lowest IoU of either model ({len(lowest)})", lowest),
            ):
                cases = [self._case_html(CaseTiles(i, self.evs), [0, 1], self._pair_scores(i)) for i in frame["id"]]
                body = "".join(cases) or '<p class="sub">None: B is at least as good as A on every image.</p>'
                parts.append(f'<h3>{heading}</h3><div class="rows">{body}</div>')
        return "".join(parts)

    def failed(self) -> str:
        rows = [(e.model, i, why) for e in self.evs for i, why in sorted(e.failed.items())]
        if not rows:
            return ""
        body = "".join(
            f"<tr><td>{html.escape(m)}</td><td>{html.escape(i)}</td><td style='text-align:left;white-space:normal'>"
            f"{html.escape(w)}</td></tr>"
            for m, i, w in rows
        )
        return (
            f"<h2>Images that could not be scored ({len(rows)})</h2><div class='tablewrap'><table>"
            f"<thead><tr><th>model</th><th>id</th><th style='text-align:left'>why</th></tr></thead><tbody>{body}</tbody></table></div>"
        )

    def about(self) -> str:
        settings = "".join(
            f"<tr><td>{html.escape(k)}</td>"
            + "".join(
                f"<td style='text-align:left;white-space:normal'>{html.escape(json.dumps(e.settings.get(k), default=str))}</td>"
                for e in self.evs
            )
            + "</tr>"
            for k in sorted({k for e in self.evs for k in e.settings})
        )
        heads = "".join(f"<th style='text-align:left'>{self._model(i)}</th>" for i in range(len(self.evs)))
        files = ", ".join(f"<code>{html.escape(f or '.')}/</code>" for f in self.folders)
        return f"""
<h2 id="about">How to read this</h2>
<div class="panel"><dl>
<dt>IoU</dt><dd>intersection over union of the predicted mask (probability &gt; threshold) and the true mask, per image at the photo's full resolution; the true mask is the original one, binarised as the dataset was prepared.</dd>
<dt>pooled IoU</dt><dd>IoU of the summed pixel counts of all images (large products weigh more).</dd>
<dt>IoU ≥ 95/97/99 %</dt><dd>share of images at or above that IoU.</dd>
<dt>boundary F</dt><dd>F-measure of outline pixels matched within the boundary tolerance (pixels of the original photo).</dd>
<dt>MAE</dt><dd>mean absolute difference between the probability map and the true mask (0 = perfect).</dd>
<dt>error regions</dt><dd>the correction effort: wrong regions beyond the edge band that are large enough to need a brush stroke (at least (short side / 100)² pixels).</dd>
<dt>empty masks</dt><dd>an empty truth with an empty prediction scores 1 on every ratio; an empty truth with any prediction (or the reverse) scores 0.</dd>
</dl>
<details><summary>Settings and files</summary><p class="sub">Numbers: <code>summary.json</code>, <code>per_image.csv</code> in {files}.</p>
<div class="tablewrap"><table><thead><tr><th>setting</th>{heads}</tr></thead><tbody>{settings}</tbody></table></div></details></div>"""

    # ----------------------------------------------------------------- assembly

    def render(self) -> str:
        css = _CSS % {"a": MODEL_COLOURS[0], "b": MODEL_COLOURS[1], "card": 560}
        body = [self.header(), self.cards()]
        body.append(
            f'<h2 id="overview">Overview</h2><div class="overview">{self.overall_table()}<div class="stack">'
            f'<div class="panel"><img src="{share_chart(self.evs)}" alt="share of images above each IoU"></div>'
            f'<div class="panel"><img src="{histogram_chart(self.evs)}" alt="IoU histogram"></div></div></div>'
        )
        body.append(
            f'<h2 id="groups">Per group</h2><div class="panel chart"><img src="{group_chart(self.evs, self.groups)}" '
            f'alt="IoU quality bands per group"></div><div style="height:12px"></div>{self.group_table()}'
        )
        if self.paired is not None:
            body.append(
                f'<h2 id="comparison">{self._model(0)} (A) vs {self._model(1)} (B), image by image</h2><div class="charts">'
                f'<div class="panel"><img src="{scatter_chart(self.evs, self.paired)}" alt="paired IoU scatter"></div>'
                f'<div class="panel"><img src="{delta_chart(self.paired, self.groups)}" alt="IoU change per group"></div></div>'
            )
        body.append(f'<h2 id="worst">Worst cases</h2>{self.worst()}')
        body.append(self.failed())
        body.append(self.about())
        return (
            f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(self.title)}</title><style>{css}</style></head>"
            f"<body><main>{''.join(body)}</main></body></html>"
        )
