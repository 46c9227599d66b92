"""How well the confidence score predicts IoU, against the stand-in it replaces.

For each domain of ../shared/data (prepared with ``clearbg prepare DOMAIN/manifest.csv --out
/tmp/DOMAIN-320``), every photo of the val and test splits goes through the model with side
outputs and the flipped pass (clearbg's default precision), and its mask is scored against the
original mask at full resolution. The calibration is fitted on the val photos of both domains
together (what ships with clearbg for the official u2netp; ``--save`` writes it there) and
judged on the test photos of each domain:

* Spearman correlation between score and IoU;
* a "bad" cutout has IoU < 0.95: the share of them caught when the lowest-scored 10 % go to
  review, the most any score could catch there (10 % of the photos / the bad share), the share
  of those sent that are bad, and the same at the threshold the calibration gives for 10 %
  (fixed on val, so the share sent on test is whatever falls under it);
* the share of photos that must be sent to catch 70 % of the bad ones;
* how far the predicted IoU is from the true one (mean absolute error);
* the cost per photo: the plain prediction, with side outputs (free signals), with the flipped
  pass, each plus the signals, interleaved photo by photo, medians (``--no-cost`` skips it).

Writes ``bench/results/confidence-u2netp-cpu2.csv`` (the table), the per-photo signals
(``confidence-signals-u2netp-cpu2.csv``, reused by ``--signals``) and the curve of share sent
against share of bad cutouts caught (``confidence-curve-u2netp.png``).

    python bench/confidence.py                        # u2netp, both domains, ~15 min on 2 busy cores
    python bench/confidence.py --signals bench/results/confidence-signals-u2netp-cpu2.csv --save
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DOMAINS = ("fashion", "cars")
BAD = 0.95  # a cutout below this IoU needs a person
SHARE = 0.10  # the share of photos sent to review
SCORES = {
    "standin": "stand-in (share of the product region above 0.9)",
    "sides": "clearbg, signals only (side outputs, no extra pass)",
    "flip+sides": "clearbg, with the flipped pass (the gate's default)",
}


def collect(model: str, prepared: str, limit: int | None) -> pd.DataFrame:
    from clearbg.inference.predictor import Predictor
    from clearbg.quality.fit import score_split

    predictor = Predictor(model)
    frames = []
    for domain in DOMAINS:
        for split in ("val", "test"):
            started = time.perf_counter()
            frame = score_split(predictor, f"{prepared.format(domain=domain)}:{split}", progress=False, limit=limit)
            frames.append(frame.assign(domain=domain, split=split))
            print(f"{domain} {split}: {len(frame)} photos in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return pd.concat(frames, ignore_index=True)


def caught(score: np.ndarray, iou: np.ndarray, share: float) -> float:
    """Share of bad cutouts among the lowest-scored ``share`` of photos."""
    bad = iou < BAD
    sent = np.argsort(score, kind="stable")[: int(np.ceil(share * len(score)))]
    return float(bad[sent].sum() / bad.sum()) if bad.any() else 1.0


def share_to_catch(score: np.ndarray, iou: np.ndarray, target: float = 0.7) -> float:
    for k in range(1, len(score) + 1):
        if caught(score, iou, k / len(score)) >= target - 1e-9:
            return k / len(score)
    return 1.0


def curve(score: np.ndarray, iou: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    bad = iou < BAD
    order = np.argsort(score, kind="stable")
    return np.arange(len(score) + 1) / len(score), np.concatenate([[0.0], np.cumsum(bad[order]) / max(bad.sum(), 1)])


def cost(model: str, prepared: str, n: int, rounds: int = 3) -> dict[str, float]:
    """Median ms per photo of each way to predict (one photo per call, one core's share of the
    work as in ``clearbg batch``), interleaved photo by photo so load from other work on the
    machine hits every setup alike: the plain map, with side outputs + signals (the score without
    a review threshold), with the flipped pass + signals (the gate's), and the signals alone."""
    from clearbg.evaluate.run import load_pair, split_rows
    from clearbg.inference.predictor import Predictor
    from clearbg.quality.features import signals

    predictor = Predictor(model, batch_size=1)
    rows = split_rows(prepared.format(domain="fashion"), "test", n).to_dict("records")
    photos = [load_pair(r["image"], r["mask"])[0] for r in rows]
    detailed = predictor.predict_detailed(photos[:1], flip=True)[0]
    runs = {
        "predict": lambda im: predictor.predict([im]),
        "sides+signals": lambda im: signals(predictor.predict_detailed([im])[0]),
        "flip+sides+signals": lambda im: signals(predictor.predict_detailed([im], flip=True)[0]),
        "signals alone": lambda im: signals(detailed),
    }
    for fn in runs.values():
        fn(photos[0])  # warm-up
    times: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(rounds):
        for i, im in enumerate(photos):
            names = list(runs)
            shift = (i + r) % len(names)
            for name in names[shift:] + names[:shift]:  # rotate the order too
                t0 = time.perf_counter()
                runs[name](im)
                times[name].append((time.perf_counter() - t0) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="u2netp")
    parser.add_argument("--prepared", default="/tmp/{domain}-320", help="prepared datasets, {domain} filled in")
    parser.add_argument("--signals", default=None, help="reuse per-photo signals from this CSV")
    parser.add_argument("--limit", type=int, default=None, help="photos per split (a quick look)")
    parser.add_argument("--cost-photos", type=int, default=10)
    parser.add_argument("--no-cost", action="store_true", help="skip the timing")
    parser.add_argument("--save", action="store_true", help="write the calibration where clearbg ships it")
    args = parser.parse_args()

    from scipy.stats import spearmanr

    from clearbg.quality.calibration import fit_calibration
    from clearbg.quality.store import SHIPPED, model_version

    RESULTS.mkdir(exist_ok=True)
    if args.signals:
        frame = pd.read_csv(args.signals)
    else:
        frame = collect(args.model, args.prepared, args.limit)
        frame.to_csv(RESULTS / "confidence-signals-u2netp-cpu2.csv", index=False)
    val, test = frame[frame.split == "val"], frame[frame.split == "test"]
    signal_columns = [c for c in frame.columns if c not in ("id", "iou", "seconds", "domain", "split")]
    calibration = fit_calibration(val[signal_columns].to_dict("records"), val["iou"].tolist(),
                                  model=model_version(args.model), data="fashion+cars val")
    if args.save:
        target = SHIPPED / f"{model_version(args.model).split('@')[0]}.json"
        target.write_text(calibration.to_json())
        print(f"calibration -> {target}", file=sys.stderr)

    rows, curves = [], {}
    for domain in DOMAINS:
        part = test[test.domain == domain]
        iou = part["iou"].to_numpy()
        bad_share = float((iou < BAD).mean())
        for key, label in SCORES.items():
            if key == "standin":
                score, threshold = part["standin"].to_numpy(), None
            else:
                combiner = calibration.combiners[key]
                score = np.array([combiner.score(s) for s in part[signal_columns].to_dict("records")])
                threshold = calibration.threshold_for_share(SHARE, flip="flip" in key, sides=True)
            at_threshold = {} if threshold is None else {
                "val_threshold": round(threshold, 4),
                "sent_at_threshold": round(float((score < threshold).mean()), 3),
                "caught_at_threshold": round(float(((score < threshold) & (iou < BAD)).sum() / max((iou < BAD).sum(), 1)), 3),
            }
            sent = np.argsort(score, kind="stable")[: int(np.ceil(SHARE * len(score)))]
            rows.append({
                "domain": domain, "photos": len(part), "bad_share": round(bad_share, 3), "score": label,
                "spearman": round(float(spearmanr(score, iou)[0]), 3),
                "caught_at_10pct": round(caught(score, iou, SHARE), 3),
                "most_catchable_at_10pct": round(min(1.0, np.ceil(SHARE * len(iou)) / max((iou < BAD).sum(), 1)), 3),
                "bad_among_sent_at_10pct": round(float((iou[sent] < BAD).mean()), 3),
                "share_to_catch_70pct": round(share_to_catch(score, iou), 3),
                "mean_abs_error": None if key == "standin" else round(float(np.mean(np.abs(score - iou))), 4),
                **at_threshold,
            })
            curves[(domain, key)] = curve(score, iou)
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    table.to_csv(RESULTS / "confidence-u2netp-cpu2.csv", index=False)

    # Each signal alone, for the README's "what each signal says".
    alone = {c: [round(float(spearmanr(test[test.domain == d][c], test[test.domain == d]["iou"])[0]), 3)
                 for d in DOMAINS] for c in signal_columns}
    print("\nSpearman of each signal alone with IoU (test: fashion, cars):")
    for c, values in alone.items():
        print(f"  {c:16s} {values}")

    if not args.no_cost:
        ms = cost(args.model, args.prepared, args.cost_photos)
        print("\nms per photo (median, one photo per call, fashion test photos):",
              {k: f"{v:.1f} ({v / ms['predict']:.2f}x)" for k, v in ms.items()})
        pd.DataFrame([ms]).to_csv(RESULTS / "confidence-cost-u2netp-cpu2.csv", index=False)
    plot(curves, test)


def plot(curves: dict, test: pd.DataFrame) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), dpi=110)
    styles = {"standin": ("#999999", "--"), "sides": ("#4c72b0", "-"), "flip+sides": ("#c44e52", "-")}
    for ax, domain in zip(axes, DOMAINS):
        iou = test[test.domain == domain]["iou"].to_numpy()
        bad = float((iou < BAD).mean())
        xs = np.linspace(0, 1, 101)
        ax.plot(xs, np.minimum(1.0, xs / bad), color="#dddddd", lw=6, label="best possible", zorder=0)
        for key, label in SCORES.items():
            x, y = curves[(domain, key)]
            color, dash = styles[key]
            ax.step(x, y, where="post", color=color, ls=dash, lw=1.8, label=label)
        ax.axvline(SHARE, color="#333333", lw=0.8, ls=":")
        ax.set_title(f"{domain} test ({len(iou)} photos, {bad:.0%} with IoU < {BAD})", fontsize=10)
        ax.set_xlabel("share of photos sent to review")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"share of cutouts with IoU < {BAD} caught")
    axes[1].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "confidence-curve-u2netp.png")
    print(f"plot -> {RESULTS / 'confidence-curve-u2netp.png'}", file=sys.stderr)


if __name__ == "__main__":
    main()
