"""The charts of the evaluation report: matplotlib figures as inline PNG data URIs.

Every chart takes evaluations (one model, or two side by side: the first is A, the second B)
and returns a ``data:image/png;base64,...`` string for an ``<img src>``, so the report stays one
self-contained file. Figures are made without pyplot (no global state, safe in any thread).

Example:
    >>> src = share_chart([evaluation])  # doctest: +SKIP
    >>> src[:22]                         # doctest: +SKIP
    'data:image/png;base64,'
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd

from clearbg.evaluate.run import GROUP_COLUMN, SHARE_BARS, Evaluation

__all__ = ["BANDS", "MODEL_COLOURS", "data_uri", "delta_chart", "group_chart", "histogram_chart", "scatter_chart",
           "share_chart"]

MODEL_COLOURS = ("#3566a8", "#e07b39")  # first model, second model (charts, table heads)
# Quality bands of per-image IoU, best first: (lower edge, label, colour).
BANDS = (
    (0.99, "≥ 99 %", "#2b8a57"),
    (0.97, "97–99 %", "#8cc46a"),
    (0.95, "95–97 %", "#f1bc4d"),
    (0.0, "< 95 %", "#d9605a"),
)
_CHART_DPI = 144


def data_uri(data: bytes, mime: str) -> str:
    """``data:<mime>;base64,...``: a file inlined into the page.

    Example:
        >>> data_uri(b"hi", "text/plain")
        'data:text/plain;base64,aGk='
    """
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # no pyplot: no global state, safe in any thread

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig


def _chart(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_CHART_DPI, facecolor="white")
    return data_uri(buffer.getvalue(), "image/png")


def _style(ax) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", color="#e4e4e4", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.tick_params(labelsize=9, colors="#333")


def _iou_floor(values: list[np.ndarray]) -> float:
    """Left edge of IoU axes: zoom in on the interesting top end, but show every image."""
    low = min(float(v.min()) for v in values)
    return max(0.0, min(0.9, np.floor(low * 20) / 20))


def histogram_chart(evaluations: list[Evaluation]) -> str:
    """Histogram of per-image IoU (one outline per model when there are two)."""
    ious = [e.per_image["iou"].to_numpy(float) for e in evaluations]
    lo = _iou_floor(ious)
    bins = np.linspace(lo, 1.0, 41)
    fig = _figure(5.6, 2.7)
    ax = fig.add_subplot()
    for i, (evaluation, iou) in enumerate(zip(evaluations, ious, strict=True)):
        clipped = np.clip(iou, lo, 1.0)
        if len(evaluations) == 1:
            ax.hist(clipped, bins=bins, color=MODEL_COLOURS[0], alpha=0.85, edgecolor="white", linewidth=0.5)
        else:
            ax.hist(clipped, bins=bins, histtype="step", linewidth=1.8, color=MODEL_COLOURS[i], label=evaluation.model)
    for bar in SHARE_BARS:
        ax.axvline(bar / 100, color="#888", linestyle=":", linewidth=1)
    ax.set_xlim(lo, 1.0)
    ax.set_xlabel("IoU per image", fontsize=9)
    ax.set_ylabel("images", fontsize=9)
    ax.set_title("IoU histogram" + (f" (below {lo:.2f} shown at {lo:.2f})" if lo > 0 else ""), fontsize=10, loc="left")
    if len(evaluations) > 1:
        ax.legend(fontsize=8, frameon=False, loc="upper left")
    _style(ax)
    return _chart(fig)


def share_chart(evaluations: list[Evaluation]) -> str:
    """Share of images at or above each IoU (1 - CDF): the headline shares read off directly."""
    ious = [np.sort(e.per_image["iou"].to_numpy(float)) for e in evaluations]
    lo = _iou_floor(ious)
    fig = _figure(5.6, 2.9)
    ax = fig.add_subplot()
    xs = np.linspace(lo, 1.0, 400)
    for i, (evaluation, iou) in enumerate(zip(evaluations, ious, strict=True)):
        share = 1.0 - np.searchsorted(iou, xs, side="left") / len(iou)
        ax.plot(xs, share, color=MODEL_COLOURS[i], linewidth=2, label=evaluation.model)
        for bar in SHARE_BARS:
            value = float((iou >= bar / 100).mean())
            ax.plot([bar / 100], [value], "o", color=MODEL_COLOURS[i], markersize=4)
            offset = 8 if i == 0 else -14
            ax.annotate(
                f"{value:.0%}",
                (bar / 100, value),
                textcoords="offset points",
                xytext=(-4, offset),
                ha="right",
                fontsize=8,
                color=MODEL_COLOURS[i],
            )
    for bar in SHARE_BARS:
        ax.axvline(bar / 100, color="#888", linestyle=":", linewidth=1)
    ax.set_xlim(lo, 1.0)
    ax.set_ylim(0, 1.05)
    ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    ax.set_xlabel("IoU", fontsize=9)
    ax.set_ylabel("images at ≥ this IoU", fontsize=9)
    ax.set_title("Share of images at or above an IoU (1 − CDF)", fontsize=10, loc="left")
    if len(evaluations) > 1:
        ax.legend(fontsize=8, frameon=False, loc="lower left")
    _style(ax)
    return _chart(fig)


def _bands(iou: np.ndarray) -> list[float]:
    shares, upper = [], np.inf
    for lower, _, _ in BANDS:
        shares.append(float(((iou >= lower) & (iou < upper)).mean()) if len(iou) else 0.0)
        upper = lower
    return shares


def group_chart(evaluations: list[Evaluation], groups: list[str]) -> str:
    """Per group (and model), a bar split into the IoU quality bands, with its mean IoU."""
    from matplotlib.patches import Patch

    rows: list[tuple[str, np.ndarray, int]] = []
    for group in groups:
        for i, evaluation in enumerate(evaluations):
            frame = evaluation.per_image
            iou = frame.loc[frame[GROUP_COLUMN] == group, "iou"].to_numpy(float)
            label = group if len(evaluations) == 1 else f"{group} · {'AB'[i]}"
            rows.append((label, iou, i))
    height = 0.9 + 0.34 * len(rows)
    fig = _figure(7.2, height)
    ax = fig.add_subplot()
    y = np.arange(len(rows))[::-1]
    for (label, iou, _), yy in zip(rows, y, strict=True):
        left = 0.0
        for share, (_, _, colour) in zip(_bands(iou), BANDS, strict=True):
            ax.barh(yy, share, left=left, color=colour, height=0.72, edgecolor="white", linewidth=0.6)
            if share >= 0.07:
                ax.text(left + share / 2, yy, f"{share:.0%}", ha="center", va="center", fontsize=7.5, color="white")
            left += share
        mean = f"mean {iou.mean():.3f} · n={len(iou)}" if len(iou) else "no images"
        ax.text(1.01, yy, mean, va="center", fontsize=8, color="#333")
    ax.set_yticks(y, [r[0] for r in rows], fontsize=8.5)
    for tick, (_, _, i) in zip(ax.get_yticklabels(), rows, strict=True):
        tick.set_color(MODEL_COLOURS[i] if len(evaluations) > 1 else "#222")
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    ax.spines[["top", "right", "left"]].set_visible(False)
    ax.tick_params(axis="x", labelsize=8)
    handles = [Patch(color=colour, label=f"IoU {label}") for _, label, colour in BANDS]
    ax.legend(handles=handles, ncols=4, fontsize=8, frameon=False, loc="lower left", bbox_to_anchor=(0, 1.0))
    return _chart(fig)


def scatter_chart(evaluations: list[Evaluation], paired: pd.DataFrame) -> str:
    """Per image, A's IoU against B's (``paired``: ``iou_a``, ``iou_b``); green above the diagonal."""
    a, b = paired["iou_a"].to_numpy(float), paired["iou_b"].to_numpy(float)
    lo = _iou_floor([a, b])
    fig = _figure(4.6, 4.2)
    ax = fig.add_subplot()
    colours = np.where(b > a, "#2b8a57", np.where(b < a, "#d9605a", "#999999"))
    ax.scatter(np.clip(a, lo, 1), np.clip(b, lo, 1), s=14, c=colours, alpha=0.75, linewidths=0)
    ax.plot([lo, 1], [lo, 1], color="#777", linewidth=1, linestyle="--")
    ax.set_xlim(lo, 1.0)
    ax.set_ylim(lo, 1.0)
    ax.set_aspect("equal")
    ax.set_xlabel(f"IoU · {evaluations[0].model}", fontsize=9, color=MODEL_COLOURS[0])
    ax.set_ylabel(f"IoU · {evaluations[1].model}", fontsize=9, color=MODEL_COLOURS[1])
    better, worse = int((b > a).sum()), int((b < a).sum())
    ax.set_title(f"Per image: {better} better, {worse} worse (green/red)", fontsize=10, loc="left")
    _style(ax)
    return _chart(fig)


def delta_chart(paired: pd.DataFrame, groups: list[str]) -> str:
    """Mean IoU change per group (second model minus first), on the paired images."""
    groups = [g for g in groups if (paired[GROUP_COLUMN] == g).any()]
    deltas = [float(paired.loc[paired[GROUP_COLUMN] == g, "iou_delta"].mean()) for g in groups]
    counts = [int((paired[GROUP_COLUMN] == g).sum()) for g in groups]
    fig = _figure(5.2, 0.9 + 0.34 * len(groups))
    ax = fig.add_subplot()
    y = np.arange(len(groups))[::-1]
    ax.barh(y, deltas, color=["#2b8a57" if d >= 0 else "#d9605a" for d in deltas], height=0.65)
    ax.axvline(0, color="#555", linewidth=0.8)
    ax.set_yticks(y, [f"{g} (n={n})" for g, n in zip(groups, counts, strict=True)], fontsize=8.5)
    span = max(1e-3, max(abs(d) for d in deltas)) * 1.35
    ax.set_xlim(-span, span)
    for yy, d in zip(y, deltas, strict=True):
        ax.text(
            d + (span * 0.02 if d >= 0 else -span * 0.02),
            yy,
            f"{d:+.4f}",
            va="center",
            ha="left" if d >= 0 else "right",
            fontsize=8,
        )
    ax.set_title("Mean IoU change per group", fontsize=10, loc="left")
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(axis="x", labelsize=8)
    return _chart(fig)
