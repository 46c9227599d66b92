"""The champion/challenger gate on per-image tables: hand-computed deltas, the rules, the refusals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clearbg.errors import ClearbgError
from clearbg.evaluate.compare import ComparisonError, compare_evaluations, first_champion


def _table(ious: dict[str, float], groups: dict[str, str] | None = None, **extra: dict[str, float]) -> pd.DataFrame:
    ids = list(ious)
    frame = pd.DataFrame({"id": ids, "group": [(groups or {}).get(i, "all") for i in ids],
                          "iou": [ious[i] for i in ids]})
    for column, values in extra.items():
        frame[column] = [values[i] for i in ids]
    return frame


GROUPS = {"a1": "tops", "a2": "tops", "b1": "shoes", "b2": "shoes"}


def test_better_challenger_is_promoted_with_hand_computed_deltas():
    champion = _table({"a1": 0.90, "a2": 0.80, "b1": 0.70, "b2": 0.60}, GROUPS)
    challenger = _table({"a1": 0.92, "a2": 0.84, "b1": 0.70, "b2": 0.62}, GROUPS)
    decision = compare_evaluations(champion, challenger, margin=0.01, tolerance=0.01)
    assert decision.promote and decision.verdict == "promote"
    assert decision.overall.delta == pytest.approx(0.02)  # (0.02 + 0.04 + 0 + 0.02) / 4
    assert decision.overall.champion == pytest.approx(0.75) and decision.overall.challenger == pytest.approx(0.77)
    assert (decision.overall.wins, decision.overall.losses) == (3, 0)
    by_group = {g.group: g for g in decision.groups}
    assert [g.group for g in decision.groups] == ["shoes", "tops"]
    assert by_group["tops"].delta == pytest.approx(0.03) and by_group["shoes"].delta == pytest.approx(0.01)
    assert "+0.0200 >= margin 0.0100" in decision.reasons[0]


def test_challenger_below_the_margin_is_refused():
    champion = _table({"a1": 0.90, "a2": 0.80})
    challenger = _table({"a1": 0.905, "a2": 0.80})
    decision = compare_evaluations(champion, challenger, margin=0.005, tolerance=0.01)
    assert not decision.promote and decision.verdict == "keep"
    assert "< margin 0.0050" in decision.reasons[0]


def test_delta_equal_to_the_margin_is_enough():
    champion = _table({"a1": 0.5, "a2": 0.5})
    challenger = _table({"a1": 0.5, "a2": 0.515625})  # mean delta exactly 1/128 in binary floats
    assert compare_evaluations(champion, challenger, margin=0.0078125).promote


def test_a_group_dropping_beyond_tolerance_vetoes_a_better_average():
    champion = _table({"a1": 0.80, "a2": 0.80, "b1": 0.90, "b2": 0.90}, GROUPS)
    challenger = _table({"a1": 0.95, "a2": 0.95, "b1": 0.87, "b2": 0.87}, GROUPS)  # shoes -0.03
    decision = compare_evaluations(champion, challenger, margin=0.005, tolerance=0.02)
    assert decision.overall.delta == pytest.approx(0.06)
    assert not decision.promote
    assert any("group 'shoes' drops -0.0300, beyond tolerance 0.0200" in r for r in decision.reasons)
    # Within a looser tolerance the same numbers promote.
    assert compare_evaluations(champion, challenger, margin=0.005, tolerance=0.05).promote


def test_paired_statistics_are_informative():
    ids = [f"p{i}" for i in range(10)]
    champion = _table(dict.fromkeys(ids, 0.9))
    same = compare_evaluations(champion, champion.copy(), margin=0.0)
    assert same.overall.p_value == 1.0 and (same.overall.ci_low, same.overall.ci_high) == (0.0, 0.0)
    rng = np.random.default_rng(3)
    better = _table({i: 0.9 + d for i, d in zip(ids, rng.uniform(0.01, 0.03, 10))})
    decision = compare_evaluations(champion, better)
    # All 10 differences positive: the exact two-sided Wilcoxon p-value is 2 / 2**10.
    assert decision.overall.p_value == pytest.approx(2 / 1024)
    assert 0.01 <= decision.overall.ci_low <= decision.overall.delta <= decision.overall.ci_high <= 0.03
    # Seeded: the same inputs give the same interval.
    again = compare_evaluations(champion, better)
    assert (again.overall.ci_low, again.overall.ci_high) == (decision.overall.ci_low, decision.overall.ci_high)


def test_other_metrics_are_shown_but_do_not_decide():
    champion = _table({"a1": 0.9, "a2": 0.9}, mae={"a1": 0.02, "a2": 0.04}, dice={"a1": 0.95, "a2": 0.95})
    challenger = _table({"a1": 0.95, "a2": 0.95}, mae={"a1": 0.01, "a2": 0.05}, dice={"a1": 0.97, "a2": 0.97})
    decision = compare_evaluations(champion, challenger)
    extras = {r.metric: r for r in decision.extras}
    assert set(extras) == {"dice", "mae"}
    assert (extras["mae"].wins, extras["mae"].losses) == (1, 1)  # lower MAE counts as a win
    assert decision.promote


def test_table_lists_overall_then_groups_and_ends_with_the_decision():
    champion = _table({"a1": 0.90, "a2": 0.80, "b1": 0.70, "b2": 0.60}, GROUPS)
    challenger = _table({"a1": 0.92, "a2": 0.84, "b1": 0.70, "b2": 0.62}, GROUPS)
    text = compare_evaluations(champion, challenger, margin=0.01).table("champion v1", "challenger v2")
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["metric", "n", "champion", "v1"] and "delta" in lines[0] and "p" in lines[0].split()
    assert lines[1].startswith("IoU overall") and "0.7500" in lines[1] and "0.7700" in lines[1] and "+0.0200" in lines[1]
    assert lines[2].startswith("IoU shoes") and lines[3].startswith("IoU tops")
    assert lines[-1].startswith("DECISION: promote - mean IoU +0.0200")
    assert first_champion().table() == "DECISION: promote - no champion yet: the challenger becomes the first champion"


def test_decision_serialises_to_json_ready_dict():
    import json

    decision = compare_evaluations(_table({"a1": 0.9}), _table({"a1": 0.8}))
    data = json.loads(json.dumps(decision.to_dict()))
    assert data["decision"] == "keep" and data["rows"][0]["delta"] == pytest.approx(-0.1)


def test_refuses_evaluations_of_different_images():
    champion = _table({"a1": 0.9, "a2": 0.9, "a3": 0.9})
    challenger = _table({"a1": 0.9, "a2": 0.9, "x9": 0.9})
    with pytest.raises(ComparisonError, match=r"not cover the same images.*1 only in the champion's \(a3\).*\(x9\)"):
        compare_evaluations(champion, challenger)
    assert issubclass(ComparisonError, ClearbgError)


@pytest.mark.parametrize("broken, message", [
    (pd.DataFrame({"id": ["a1"], "iou": [0.9]}), r"no column\(s\) \['group'\]"),
    (pd.DataFrame({"id": ["a1", "a1"], "group": ["all", "all"], "iou": [0.9, 0.8]}), "more than once: a1"),
    (pd.DataFrame({"id": ["a1"], "group": ["all"], "iou": [float("nan")]}), "no IoU for a1"),
    (pd.DataFrame({"id": ["a1"], "group": ["shoes"], "iou": [0.9]}), "different groups"),
])
def test_refuses_malformed_tables(broken, message):
    with pytest.raises(ComparisonError, match=message):
        compare_evaluations(_table({"a1": 0.9}), broken)


def test_negative_thresholds_are_refused():
    with pytest.raises(ComparisonError, match="margin and tolerance must be >= 0"):
        compare_evaluations(_table({"a1": 0.9}), _table({"a1": 0.9}), tolerance=-0.1)


def test_a_group_dropping_exactly_the_tolerance_does_not_veto():
    # Binary-exact numbers: shoes drop by exactly 0.25 = tolerance, which the rule allows (>= -tolerance);
    # a veto at "<=" instead of "<" would refuse this challenger.
    champion = _table({"a1": 0.25, "a2": 0.25, "b1": 1.0, "b2": 1.0}, GROUPS)
    challenger = _table({"a1": 1.0, "a2": 1.0, "b1": 0.75, "b2": 0.75}, GROUPS)
    assert compare_evaluations(champion, challenger, margin=0.0, tolerance=0.25).promote
    assert not compare_evaluations(champion, challenger, margin=0.0, tolerance=0.1875).promote


def test_the_default_gate_is_margin_0_005_and_tolerance_0_01():
    # Binary-exact: a mean gain of 1/128 (0.0078) clears the default margin, 1/256 (0.0039) does not.
    base = _table({"a1": 0.5, "a2": 0.5})
    assert compare_evaluations(base, _table({"a1": 0.5, "a2": 0.515625})).promote
    assert not compare_evaluations(base, _table({"a1": 0.5, "a2": 0.5078125})).promote
    # Shoes drop by 1/64 (0.0156) > 0.01: vetoed by default; by 1/128 (0.0078): allowed.
    champion = _table({"a1": 0.5, "a2": 0.5, "b1": 0.5, "b2": 0.5}, GROUPS)
    for drop, promoted in [(0.015625, False), (0.0078125, True)]:
        challenger = _table({"a1": 0.75, "a2": 0.75, "b1": 0.5 - drop, "b2": 0.5 - drop}, GROUPS)
        decision = compare_evaluations(champion, challenger)
        assert decision.promote is promoted
        assert (decision.margin, decision.tolerance) == (0.005, 0.01)
    assert (first_champion().margin, first_champion().tolerance) == (0.005, 0.01)
    assert (first_champion(0.02, 0.03).margin, first_champion(0.02, 0.03).tolerance) == (0.02, 0.03)


def test_the_default_bootstrap_is_seed_0_with_2000_resamples():
    rng = np.random.default_rng(5)
    ids = [f"p{i}" for i in range(12)]
    champion = _table({i: 0.9 for i in ids})
    challenger = _table({i: 0.9 + d for i, d in zip(ids, rng.normal(0.01, 0.02, 12))})
    interval = lambda d: (d.overall.ci_low, d.overall.ci_high)  # noqa: E731
    default = interval(compare_evaluations(champion, challenger))
    assert default == interval(compare_evaluations(champion, challenger, seed=0, n_boot=2000))
    assert default != interval(compare_evaluations(champion, challenger, seed=1))
    assert default != interval(compare_evaluations(champion, challenger, n_boot=2001))


def test_a_zero_tolerance_is_allowed():
    assert compare_evaluations(_table({"a1": 0.9}), _table({"a1": 0.95}), tolerance=0.0).promote


def test_every_row_names_its_metric_count_and_direction():
    champion = _table({"a1": 0.8, "a2": 0.8, "b1": 0.9, "b2": 0.9}, GROUPS,
                      mae={"a1": 0.02, "a2": 0.02, "b1": 0.02, "b2": 0.02}, dice=dict.fromkeys(GROUPS, 0.9))
    challenger = _table({"a1": 0.85, "a2": 0.8, "b1": 0.95, "b2": 0.9}, GROUPS,
                        mae={"a1": 0.01, "a2": 0.01, "b1": 0.03, "b2": 0.02}, dice=dict.fromkeys(GROUPS, 0.9))
    decision = compare_evaluations(champion, challenger)
    tops = next(g for g in decision.groups if g.group == "tops")
    assert (tops.label, tops.n, tops.wins, tops.losses, tops.higher_is_better) == ("IoU tops", 2, 1, 0, True)
    assert (decision.overall.label, decision.overall.n) == ("IoU overall", 4)
    mae = next(r for r in decision.extras if r.metric == "mae")
    # Lower is better: a1 and a2 improve, b1 worsens, b2 ties (neither).
    assert (mae.label, mae.n, mae.wins, mae.losses, mae.higher_is_better) == ("MAE overall", 4, 2, 1, False)
    assert next(r for r in decision.extras if r.metric == "dice").label == "Dice overall"


def test_a_metric_only_one_side_has_is_not_compared():
    champion = _table({"a1": 0.9}, dice={"a1": 0.95})
    decision = compare_evaluations(champion, _table({"a1": 0.95}))
    assert decision.extras == ()


def test_a_veto_keeps_the_margin_sentence_first():
    champion = _table({"a1": 0.5, "a2": 0.5, "b1": 0.5, "b2": 0.5}, GROUPS)
    challenger = _table({"a1": 1.0, "a2": 1.0, "b1": 0.25, "b2": 0.25}, GROUPS)
    reasons = compare_evaluations(champion, challenger).reasons
    assert reasons[0].startswith("mean IoU +0.1250 >= margin") and reasons[1].startswith("group 'shoes' drops")


@pytest.mark.parametrize("side", ["champion", "challenger"])
def test_malformed_table_messages_name_the_side_and_what_is_expected(side):
    good, broken = _table({"a1": 0.9}), pd.DataFrame({"id": ["a1"], "group": ["all"]})
    pair = (broken, good) if side == "champion" else (good, broken)
    with pytest.raises(ComparisonError) as caught:
        compare_evaluations(*pair)
    assert str(caught.value) == (f"the {side} evaluation has no column(s) ['iou']; "
                                 "expected Evaluation.per_image with id, group and iou")


def test_an_iou_that_is_not_a_number_at_all_is_refused():
    broken = pd.DataFrame({"id": ["a1"], "group": ["all"], "iou": pd.Series([None], dtype=object)})
    with pytest.raises(ComparisonError, match="the challenger evaluation has no IoU for a1"):
        compare_evaluations(_table({"a1": 0.9}), broken)


def test_images_only_one_side_has_are_refused_whichever_side():
    two, one = _table({"a1": 0.9, "a2": 0.9}), _table({"a1": 0.9})
    for pair, counts in [((two, one), "1 only in the champion's (a2), 0 only in the challenger's (none)"),
                         ((one, two), "0 only in the champion's (none), 1 only in the challenger's (a2)")]:
        with pytest.raises(ComparisonError) as caught:
            compare_evaluations(*pair)
        assert str(caught.value) == ("the two evaluations do not cover the same images, so a paired comparison "
                                     f"would be unfair: {counts}; evaluate both on the same DATASET:split")


def test_the_moved_group_message_says_what_to_do():
    with pytest.raises(ComparisonError) as caught:
        compare_evaluations(_table({"a1": 0.9}), _table({"a1": 0.9}, {"a1": "shoes"}))
    assert str(caught.value) == ("images are in different groups in the two evaluations: a1; "
                                 "the dataset's clusters changed between them, evaluate both again")
