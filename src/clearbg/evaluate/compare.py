"""Champion vs challenger: a paired comparison over the same images, and the promotion decision.

Both models are scored on the same held-out photos, so the comparison is paired: for every image
the challenger's IoU minus the champion's. Pairing removes the variation between photos (a hard
photo is hard for both models), which is far larger than the difference between two good models.

The gate, with ``delta`` = challenger minus champion, mean over images:

* overall: ``delta >= margin`` (the challenger must be better by a margin, not just different);
* every group (cluster / product type): ``delta_group >= -tolerance`` (no kind of product may get
  noticeably worse for the sake of the average).

Both must hold to promote. Each row of the table also shows a 95 % bootstrap interval of the mean
delta and the Wilcoxon signed-rank p-value of the per-image deltas: they say how much to trust a
small delta on a small set, but the decision stays with the margin and tolerance the team chose,
so it does not flip with the number of images.

Example:
    >>> decision = compare_evaluations(champion.per_image, challenger.per_image, margin=0.005)  # doctest: +SKIP
    >>> print(decision.table())                                                                # doctest: +SKIP
    >>> decision.promote                                                                       # doctest: +SKIP
    True
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from clearbg.errors import ClearbgError

DECISION_METRIC = "iou"
# Shown for information below the IoU rows when both evaluations have them; never decide.
# name -> (label, higher is better)
EXTRA_METRICS = {
    "dice": ("Dice", True),
    "boundary_f": ("boundary F", True),
    "mae": ("MAE", False),
    "error_regions": ("error regions", False),
}
_BOOTSTRAP_CHUNK = 256  # resamples per chunk: keeps memory at chunk x images on big test sets


class ComparisonError(ClearbgError):
    """Two evaluations cannot be compared image by image (different images, missing columns)."""


@dataclass(frozen=True)
class RowComparison:
    """One row of the comparison table: one metric over all images or over one group.

    Attributes:
        label: what the row is, e.g. ``"IoU overall"``, ``"IoU shorts"``, ``"MAE overall"``.
        metric: the per-image column compared (``iou``, ``dice`` ...).
        group: the group name, or None for all images.
        n: images in the row.
        champion, challenger: mean of the metric per model.
        delta: challenger minus champion (mean of the per-image differences).
        ci_low, ci_high: 95 % bootstrap interval of ``delta``.
        p_value: Wilcoxon signed-rank p-value of the per-image differences (1.0 when all are 0).
        wins, losses: images where the challenger is better / worse (ties are neither).
        higher_is_better: False for error metrics (MAE, error regions).
    """

    label: str
    metric: str
    group: str | None
    n: int
    champion: float
    challenger: float
    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    wins: int
    losses: int
    higher_is_better: bool = True


@dataclass(frozen=True)
class Decision:
    """What the gate decided, the numbers it decided on, and why, in words.

    Attributes:
        promote: True when the challenger should replace the champion.
        reasons: one sentence per rule, passed or failed, in the order checked.
        margin, tolerance: the thresholds used.
        overall: the IoU row over all images.
        groups: the IoU row of every group, sorted by name.
        extras: informative rows for other metrics (Dice, boundary F, MAE ...).
    """

    promote: bool
    reasons: tuple[str, ...]
    margin: float
    tolerance: float
    overall: RowComparison | None
    groups: tuple[RowComparison, ...] = ()
    extras: tuple[RowComparison, ...] = ()

    @property
    def verdict(self) -> str:
        """``"promote"`` or ``"keep"`` (the champion stays)."""
        return "promote" if self.promote else "keep"

    def rows(self) -> list[RowComparison]:
        """Every row in table order: overall IoU, IoU per group, then the other metrics."""
        return ([self.overall] if self.overall is not None else []) + list(self.groups) + list(self.extras)

    def table(self, champion: str = "champion", challenger: str = "challenger") -> str:
        """The side-by-side table and a final ``DECISION:`` line, as plain text for a terminal.

        Args:
            champion, challenger: column headers (e.g. ``"champion v1"``).

        Example:
            >>> print(decision.table("champion v1", "challenger v2"))  # doctest: +SKIP
            metric          n  champion v1  challenger v2    delta  95% CI of delta      p  ...
        """
        header = ["metric", "n", champion, challenger, "delta", "95% CI of delta", "p", "better/worse"]
        lines = []
        if not self.rows():  # first champion: nothing to compare
            return f"DECISION: {self.verdict} - " + "; ".join(self.reasons)
        for row in self.rows():
            lines.append([
                row.label, str(row.n), f"{row.champion:.4f}", f"{row.challenger:.4f}", f"{row.delta:+.4f}",
                f"[{row.ci_low:+.4f}, {row.ci_high:+.4f}]", _format_p(row.p_value), f"{row.wins}/{row.losses}",
            ])
        widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
        text = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                for r in [header, *lines]]
        if self.extras:
            text.append("(rows below the IoU rows are for information; MAE and error regions: lower is better)")
        text.append(f"DECISION: {self.verdict} - " + "; ".join(self.reasons))
        return "\n".join(text)

    def to_dict(self) -> dict:
        """JSON-ready form (for ``decision.json`` in MLflow)."""
        return {
            "decision": self.verdict,
            "promote": self.promote,
            "reasons": list(self.reasons),
            "margin": self.margin,
            "tolerance": self.tolerance,
            "rows": [asdict(r) for r in self.rows()],
        }


def compare_evaluations(
    champion: pd.DataFrame,
    challenger: pd.DataFrame,
    *,
    margin: float = 0.005,
    tolerance: float = 0.01,
    seed: int = 0,
    n_boot: int = 2000,
) -> Decision:
    """Pair two per-image evaluations of the same images and decide whether to promote.

    Args:
        champion, challenger: one row per image with at least ``id``, ``group`` and ``iou``
            (``Evaluation.per_image``); other metric columns present in both become
            informative rows.
        margin: the challenger's mean IoU must beat the champion's by at least this much.
        tolerance: no group's mean IoU may drop by more than this.
        seed: seeds the bootstrap, so the same inputs give the same table.
        n_boot: bootstrap resamples for the intervals.

    Returns:
        The :class:`Decision` with the table rows and the reasons.

    Raises:
        ComparisonError: a column is missing, ids repeat, the two do not cover the same images,
            an image is in different groups, or an IoU is not a number.

    Example:
        >>> a = pd.DataFrame({"id": ["p1", "p2"], "group": ["tops", "tops"], "iou": [0.90, 0.92]})
        >>> b = pd.DataFrame({"id": ["p1", "p2"], "group": ["tops", "tops"], "iou": [0.93, 0.95]})
        >>> compare_evaluations(a, b, margin=0.01).promote
        True
    """
    if margin < 0 or tolerance < 0:
        raise ComparisonError(f"margin and tolerance must be >= 0, got margin={margin}, tolerance={tolerance}")
    paired = _pair(champion, challenger)
    rng = np.random.default_rng(seed)
    overall = _row(paired, DECISION_METRIC, None, "IoU overall", True, rng, n_boot)
    groups = tuple(
        _row(part, DECISION_METRIC, str(name), f"IoU {name}", True, rng, n_boot)
        for name, part in paired.groupby("group", sort=True)
    )
    extras = tuple(
        _row(paired, metric, None, f"{label} overall", higher, rng, n_boot)
        for metric, (label, higher) in EXTRA_METRICS.items()
        if f"{metric}_champion" in paired and f"{metric}_challenger" in paired
    )
    reasons = []
    better = overall.delta >= margin
    verb = ">=" if better else "<"
    reasons.append(
        f"mean IoU {overall.delta:+.4f} {verb} margin {margin:.4f} over {overall.n} images "
        f"({overall.champion:.4f} -> {overall.challenger:.4f}; better on {overall.wins}, worse on {overall.losses})"
    )
    dropped = [g for g in groups if g.delta < -tolerance]
    if dropped:
        reasons += [f"group {g.group!r} drops {g.delta:+.4f}, beyond tolerance {tolerance:.4f} ({g.n} images)"
                    for g in dropped]
    elif groups:
        worst = min(groups, key=lambda g: g.delta)
        reasons.append(f"no group drops beyond tolerance {tolerance:.4f} (worst: {worst.group!r} {worst.delta:+.4f})")
    return Decision(promote=better and not dropped, reasons=tuple(reasons), margin=margin, tolerance=tolerance,
                    overall=overall, groups=groups, extras=extras)


def first_champion(margin: float = 0.005, tolerance: float = 0.01) -> Decision:
    """The decision when there is no champion yet: the challenger becomes it, nothing to compare.

    Example:
        >>> first_champion().reasons
        ('no champion yet: the challenger becomes the first champion',)
    """
    return Decision(promote=True, reasons=("no champion yet: the challenger becomes the first champion",),
                    margin=margin, tolerance=tolerance, overall=None)


def _pair(champion: pd.DataFrame, challenger: pd.DataFrame) -> pd.DataFrame:
    for side, frame in (("champion", champion), ("challenger", challenger)):
        missing = {"id", "group", DECISION_METRIC} - set(frame.columns)
        if missing:
            raise ComparisonError(f"the {side} evaluation has no column(s) {sorted(missing)}; "
                                  "expected Evaluation.per_image with id, group and iou")
        repeated = frame["id"][frame["id"].duplicated()].unique().tolist()
        if repeated:
            raise ComparisonError(f"the {side} evaluation lists images more than once: {_few(repeated)}")
        bad = frame["id"][~np.isfinite(frame[DECISION_METRIC].to_numpy(dtype=float))].tolist()
        if bad:
            raise ComparisonError(f"the {side} evaluation has no IoU for {_few(bad)}")
    only_champion = sorted(set(champion["id"]) - set(challenger["id"]))
    only_challenger = sorted(set(challenger["id"]) - set(champion["id"]))
    if only_champion or only_challenger:
        raise ComparisonError(
            "the two evaluations do not cover the same images, so a paired comparison would be unfair: "
            f"{len(only_champion)} only in the champion's ({_few(only_champion)}), "
            f"{len(only_challenger)} only in the challenger's ({_few(only_challenger)}); "
            "evaluate both on the same DATASET:split"
        )
    metrics = [DECISION_METRIC, *EXTRA_METRICS]
    left = champion[["id", "group", *[m for m in metrics if m in champion]]]
    right = challenger[["id", "group", *[m for m in metrics if m in challenger]]]
    paired = left.merge(right, on="id", suffixes=("_champion", "_challenger"), validate="one_to_one")
    moved = paired["id"][paired["group_champion"].astype(str) != paired["group_challenger"].astype(str)].tolist()
    if moved:
        raise ComparisonError(f"images are in different groups in the two evaluations: {_few(moved)}; "
                              "the dataset's clusters changed between them, evaluate both again")
    paired["group"] = paired.pop("group_champion").astype(str)
    paired.pop("group_challenger")
    return paired.sort_values("id", kind="stable").reset_index(drop=True)


def _row(paired: pd.DataFrame, metric: str, group: str | None, label: str, higher: bool,
         rng: np.random.Generator, n_boot: int) -> RowComparison:
    a = paired[f"{metric}_champion"].to_numpy(dtype=float)
    b = paired[f"{metric}_challenger"].to_numpy(dtype=float)
    diff = b - a
    low, high = _bootstrap_ci(diff, rng, n_boot)
    better = diff > 0 if higher else diff < 0
    worse = diff < 0 if higher else diff > 0
    return RowComparison(label=label, metric=metric, group=group, n=len(diff), champion=float(a.mean()),
                         challenger=float(b.mean()), delta=float(diff.mean()), ci_low=low, ci_high=high,
                         p_value=_wilcoxon(diff), wins=int(better.sum()), losses=int(worse.sum()),
                         higher_is_better=higher)


def _bootstrap_ci(diff: np.ndarray, rng: np.random.Generator, n_boot: int, level: float = 0.95) -> tuple[float, float]:
    # Percentile bootstrap of the mean paired difference: resample images, keep pairs together.
    n = len(diff)
    means = []
    for start in range(0, n_boot, _BOOTSTRAP_CHUNK):
        count = min(_BOOTSTRAP_CHUNK, n_boot - start)
        means.append(diff[rng.integers(0, n, size=(count, n))].mean(axis=1))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(np.concatenate(means), [tail, 100 - tail])
    return float(low), float(high)


def _wilcoxon(diff: np.ndarray) -> float:
    from scipy.stats import wilcoxon

    if not np.any(diff != 0):
        return 1.0  # identical predictions: no evidence of any difference (scipy would warn)
    p = float(wilcoxon(diff, zero_method="wilcox").pvalue)
    return p if math.isfinite(p) else 1.0


def _format_p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _few(items: list, k: int = 5) -> str:
    shown = ", ".join(map(str, items[:k]))
    return shown + (f" and {len(items) - k} more" if len(items) > k else "") if items else "none"
