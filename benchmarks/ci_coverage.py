"""How often flaxbench's 95% CIs hold the true value, against a percentile bootstrap over tiles, on simulated tests.

    python benchmarks/ci_coverage.py [--samples 1000] [--resamples 1000] [--seed 0] [--only NAME,...] [--json]

Each scenario draws `--samples` test sets from a classifier whose true value is known, computes the
interval flaxbench reports (flaxbench.class_intervals, flaxbench.auc_intervals) and the percentile
bootstrap over tiles that flaxbench used before (`--resamples` resamples, tiles drawn with
replacement), and counts how often each holds the true value, misses it below or above it, and its
mean width. The scenarios are the small or near-perfect test sets where a bootstrap has no spread to
resample: a class found on nearly every tile, an AUC from 3 positives, three classes of 10 tiles,
six classes of 20 tiles told apart almost perfectly, two classifiers on 100 tiles; and tiles of 12
patients or slides, each one's tiles right or wrong together more than chance says, where
flaxbench's CI is the one over them and the tile-level one is shown beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from statistics import NormalDist
from typing import NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flaxbench import metrics  # noqa: E402
from flaxbench.auc_intervals import auc_interval, macro_auc_interval  # noqa: E402
from flaxbench.class_intervals import (  # noqa: E402
    accuracy_interval, balanced_accuracy_interval, class_cis, paired_difference_interval,
)
from flaxbench.group_design_effects import (  # noqa: E402
    group_balanced_accuracy_interval, group_macro_auc_interval,
)
from flaxbench.group_intervals import group_accuracy_interval  # noqa: E402

# A test set: labels (tiles,), and per tile either a predicted class (tiles,), class probabilities (tiles, classes)
# or a second classifier's outcome; a statistic maps the tiles drawn (resamples, tiles) to its values.
TestSet = dict[str, np.ndarray]


class Scenario(NamedTuple):
    """One kind of test set: how to draw one, the true value, flaxbench's interval, the statistic resampled, and
    other intervals to compare (name, interval)."""

    name: str
    truth: float
    draw: Callable[[np.random.Generator], TestSet]
    interval: Callable[[TestSet], tuple[float, float]]
    statistic: Callable[[TestSet, np.ndarray], np.ndarray]
    others: tuple[tuple[str, Callable[[TestSet], tuple[float, float]]], ...] = ()


def _f1_of_class_zero(test: TestSet, picks: np.ndarray) -> np.ndarray:
    """Class 0's F1 on each resample of tiles (NaN where no tile is or is called class 0)."""
    is_zero, called_zero = test["labels"][picks] == 0, test["predicted"][picks] == 0
    twice_found = 2 * np.sum(is_zero & called_zero, axis=1)
    counted = twice_found + np.sum(is_zero ^ called_zero, axis=1)
    return np.divide(twice_found, counted, out=np.full(len(picks), np.nan), where=counted > 0)


def _f1_interval(test: TestSet) -> tuple[float, float]:
    labels, predicted = test["labels"], test["predicted"]
    said = np.eye(2, dtype=int)[predicted]
    low, high = class_cis((labels == predicted).astype(int), np.ones(len(labels)), labels, said)["f1"][0]
    return float(low), float(high)


def _draw_f1(rng: np.random.Generator) -> TestSet:
    # 60 tiles, 30% of class 0; class 0 found on 98% of its tiles, 1% of the others called it
    labels = (rng.random(60) > 0.3).astype(int)
    called_zero = np.where(labels == 0, rng.random(60) < 0.98, rng.random(60) < 0.01)
    return {"labels": labels, "predicted": np.where(called_zero, 0, 1)}


def _resampled_aucs(scores: np.ndarray, positive: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """One-vs-rest AUC of `scores` (tiles,) for the `positive` tiles on each resample `picks` (resamples, tiles),
    each drawn tile counted as often as drawn, ties half; NaN without both kinds of tile."""
    resamples, tiles = picks.shape
    order = np.argsort(scores, kind="stable")
    drawn = np.bincount((np.arange(resamples)[:, None] * tiles + picks).ravel(),
                        minlength=resamples * tiles).reshape(resamples, tiles)[:, order]  # tile counts by score
    ordered, positive = scores[order], positive[order]
    negatives = drawn * ~positive
    below = np.cumsum(negatives, axis=1) - negatives  # negatives drawn with a lower (or equal, earlier) score
    tied = np.zeros_like(below, dtype=np.float64)
    for start in np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]):  # runs of equal scores
        stop = np.searchsorted(ordered, ordered[start], side="right")
        if stop - start > 1:
            tied_negatives = negatives[:, start:stop].sum(axis=1, keepdims=True)
            below[:, start:stop] = below[:, [start]]
            tied[:, start:stop] = tied_negatives
    wins = np.sum(drawn * positive * (below + tied / 2), axis=1)
    pairs = np.sum(drawn * positive, axis=1) * np.sum(negatives, axis=1)
    return np.divide(wins, pairs, out=np.full(resamples, np.nan), where=pairs > 0)


def _auc_of_class_zero(test: TestSet, picks: np.ndarray) -> np.ndarray:
    """Class 0's one-vs-rest AUC on each resample."""
    return _resampled_aucs(test["probabilities"][:, 0], test["labels"] == 0, picks)


def _draw_binormal(rng: np.random.Generator, positives: int, negatives: int, shift: float) -> TestSet:
    labels = np.array([0] * positives + [1] * negatives)
    score = rng.normal(size=labels.size) + shift * (labels == 0)
    return {"labels": labels, "probabilities": np.stack([score, -score], axis=1)}


def _class_auc_interval(test: TestSet) -> tuple[float, float]:
    labels = test["labels"]
    auc = metrics.one_vs_rest_auc(test["probabilities"], labels)[0]
    return auc_interval(auc, int(np.sum(labels == 0)), int(np.sum(labels != 0)))


def _balanced_accuracy(test: TestSet, picks: np.ndarray) -> np.ndarray:
    """Mean recall over the classes each resample holds."""
    labels, right = test["labels"][picks], test["right"][picks]
    classes = int(test["labels"].max()) + 1
    found = np.stack([np.sum(right & (labels == c), axis=1) for c in range(classes)], axis=1)
    tiles = np.stack([np.sum(labels == c, axis=1) for c in range(classes)], axis=1)
    recall = np.divide(found, tiles, out=np.zeros(found.shape), where=tiles > 0)
    return recall.sum(axis=1) / (tiles > 0).sum(axis=1)


def _draw_recalls(rng: np.random.Generator) -> TestSet:
    labels = np.repeat(np.arange(3), 10)
    return {"labels": labels, "right": rng.random(30) < np.array([0.9, 0.95, 1.0])[labels]}


def _scored(rng: np.random.Generator, tiles: int, classes: int, signal: float) -> TestSet:
    """Class probabilities whose true class's logit is `signal` higher; every class present."""
    while True:
        labels = rng.integers(0, classes, tiles)
        if np.bincount(labels, minlength=classes).min() > 0:
            break
    logits = rng.normal(size=(tiles, classes))
    logits[np.arange(tiles), labels] += signal
    return {"labels": labels, "probabilities": np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)}


def _macro_auc(test: TestSet, picks: np.ndarray) -> np.ndarray:
    """The mean over classes of each class's AUC on each resample (classes without one left out)."""
    aucs = np.stack([_resampled_aucs(test["probabilities"][:, c], test["labels"] == c, picks)
                     for c in range(test["probabilities"].shape[1])])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample without any AUC: NaN
        return np.nanmean(aucs, axis=0)


def _true_macro_auc(classes: int, signal: float) -> float:
    """The macro AUC of `_scored`'s classifier, from 200,000 tiles."""
    test = _scored(np.random.default_rng(12345), 200_000, classes, signal)
    return float(metrics.macro_auc(metrics.one_vs_rest_auc(test["probabilities"], test["labels"])))


def _draw_pairs(rng: np.random.Generator) -> TestSet:
    # both right 80%, A alone 10%, B alone 5%, neither 5%: A 90%, B 85%
    cell = rng.choice(4, size=100, p=[0.8, 0.1, 0.05, 0.05])
    return {"right": np.isin(cell, (0, 1)), "other": np.isin(cell, (0, 2))}


def _draw_patients(rng: np.random.Generator) -> TestSet:
    # 12 patients of 25 tiles; each patient's tiles right with its own chance, Beta(8.5, 1.5): 0.85 on average,
    # from about 0.6 to 1 (a tile's outcome correlates with its patient's other tiles', as slides of one patient do)
    chance = np.repeat(rng.beta(8.5, 1.5, 12), 25)
    return {"right": rng.random(300) < chance, "patients": np.repeat(np.arange(12), 25)}


def _draw_patients_classes(rng: np.random.Generator) -> TestSet:
    # 12 patients with 8 tiles of each of 3 classes; each patient's recall of a class its own, Beta about 0.85,
    # 0.75 and 0.9 (concentration 10)
    means = np.array([0.85, 0.75, 0.9])
    chance = rng.beta(means * 10, (1 - means) * 10, size=(12, 3))
    patients, labels = np.repeat(np.arange(12), 24), np.tile(np.repeat(np.arange(3), 8), 12)
    return {"right": rng.random(288) < chance[patients, labels], "labels": labels, "patients": patients}


def _balanced_accuracy_over_patients(test: TestSet) -> tuple[float, float]:
    right, labels = test["right"].astype(float), test["labels"]
    tiles = balanced_accuracy_interval(right, np.ones(right.size), labels)
    return group_balanced_accuracy_interval(right, np.ones(right.size), labels, test["patients"].astype(str),
                                            tiles).interval


def _draw_slides(rng: np.random.Generator, slides: int = 12) -> TestSet:
    """25 tiles of 3 classes from each slide; each slide's classes told apart by its own margin (Gamma, mean 2)."""
    margin = np.repeat(rng.gamma(4.0, 0.5, slides), 25)
    labels = rng.integers(0, 3, slides * 25)
    logits = rng.normal(size=(labels.size, 3))
    logits[np.arange(labels.size), labels] += margin
    return {"labels": labels, "probabilities": np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True),
            "slides": np.repeat(np.arange(slides), 25)}


def _macro_auc_over_slides(test: TestSet) -> tuple[float, float]:
    runs, labels = [test["probabilities"]], [test["labels"]]
    tiles = macro_auc_interval(runs, labels)
    return group_macro_auc_interval(runs, labels, [np.arange(labels[0].size)], test["slides"].astype(str),
                                    tiles).interval


def _true_macro_auc_of_slides() -> float:
    """The macro AUC of `_draw_slides`' classifier, from 8,000 slides."""
    test = _draw_slides(np.random.default_rng(12345), slides=8000)
    return float(metrics.macro_auc(metrics.one_vs_rest_auc(test["probabilities"], test["labels"])))


def scenarios() -> list[Scenario]:
    """The scenarios, each with its true value."""
    return [
        Scenario("class F1 0.978, 60 tiles", 2 * 0.3 * 0.98 / (2 * 0.3 * 0.98 + 0.3 * 0.02 + 0.7 * 0.01),
                 _draw_f1, _f1_interval, _f1_of_class_zero),
        Scenario("class AUC 0.983, 3 + 22 tiles", NormalDist().cdf(3 / np.sqrt(2)),
                 lambda rng: _draw_binormal(rng, 3, 22, 3.0), _class_auc_interval, _auc_of_class_zero),
        Scenario("class AUC 0.76, 15 + 45 tiles", NormalDist().cdf(1 / np.sqrt(2)),
                 lambda rng: _draw_binormal(rng, 15, 45, 1.0), _class_auc_interval, _auc_of_class_zero),
        Scenario("balanced accuracy 0.95, 3 x 10 tiles", 0.95, _draw_recalls,
                 lambda t: balanced_accuracy_interval(t["right"], np.ones(t["right"].size), t["labels"]),
                 _balanced_accuracy),
        Scenario("macro AUC 0.996, 6 classes, 120 tiles", _true_macro_auc(6, 3.0),
                 lambda rng: _scored(rng, 120, 6, 3.0),
                 lambda t: macro_auc_interval([t["probabilities"]], [t["labels"]]), _macro_auc),
        Scenario("accuracy over 12 patients of 25 tiles", 0.85, _draw_patients,
                 lambda t: group_accuracy_interval(t["right"], None, t["patients"].astype(str)).interval,
                 lambda t, picks: t["right"][picks].mean(axis=1),
                 (("Wilson over tiles", lambda t: accuracy_interval(t["right"])),)),
        Scenario("balanced accuracy over 12 patients x 3 x 8", 0.8333, _draw_patients_classes,
                 _balanced_accuracy_over_patients, _balanced_accuracy,
                 (("MOVER over tiles", lambda t: balanced_accuracy_interval(t["right"], np.ones(t["right"].size),
                                                                            t["labels"])),)),
        Scenario("macro AUC over 12 slides of 25 tiles", _true_macro_auc_of_slides(), _draw_slides,
                 _macro_auc_over_slides, _macro_auc,
                 (("MOVER over tiles", lambda t: macro_auc_interval([t["probabilities"]], [t["labels"]])),)),
        Scenario("accuracy difference 0.05, 100 paired tiles", 0.05, _draw_pairs,
                 lambda t: paired_difference_interval(t["right"], t["other"]),
                 lambda t, picks: t["right"][picks].mean(axis=1) - t["other"][picks].mean(axis=1)),
    ]


def percentile_bootstrap(test: TestSet, statistic: Callable, resamples: int, rng: np.random.Generator
                         ) -> tuple[float, float]:
    """The 95% percentile interval of `statistic` over `resamples` resamples of the test set's tiles."""
    tiles = len(next(iter(test.values())))
    values = statistic(test, rng.integers(0, tiles, size=(resamples, tiles)))
    low, high = np.nanquantile(values, [0.025, 0.975])
    return float(low), float(high)


def coverage(scenario: Scenario, samples: int, resamples: int, seed: int) -> list[dict]:
    """Per method, how often its interval held the true value over `samples` test sets, missed it below or above,
    and its mean width."""
    rng = np.random.default_rng([seed, zlib.crc32(scenario.name.encode())])  # a scenario's draws whatever runs beside
    counts: dict[str, list] = {}
    for _ in range(samples):
        test = scenario.draw(rng)
        found = [("flaxbench", scenario.interval(test)),
                 *((name, interval(test)) for name, interval in scenario.others),
                 ("percentile bootstrap", percentile_bootstrap(test, scenario.statistic, resamples, rng))]
        for method, (low, high) in found:
            counts.setdefault(method, []).append((scenario.truth < low, scenario.truth > high, high - low))
    rows = []
    for method, found in counts.items():
        below, above, width = (np.array(column) for column in zip(*found))
        missed_below, missed_above = int(below.sum()), int(above.sum())
        rows.append({"scenario": scenario.name, "truth": round(scenario.truth, 4), "method": method,
                     "coverage": round((samples - missed_below - missed_above) / samples, 4), "below": missed_below,
                     "above": missed_above, "mean_width": float(width.mean()), "samples": samples,
                     "resamples": resamples if method == "percentile bootstrap" else None})
    return rows


def main() -> int:
    """Parse the flags, run the scenarios and print a table or JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=1000, help="test sets drawn per scenario")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples per test set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="", help="comma-separated scenario name prefixes, e.g. 'class AUC'")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args()
    if args.samples < 1 or args.resamples < 1:
        print("ci_coverage: --samples and --resamples must be at least 1", file=sys.stderr)
        return 1
    chosen = [s for s in scenarios() if not args.only or any(s.name.startswith(p) for p in args.only.split(","))]
    if not chosen:
        names = "; ".join(s.name for s in scenarios())
        print(f"ci_coverage: --only {args.only!r} names no scenario; the scenarios: {names}", file=sys.stderr)
        return 1
    if not args.json:
        print(f"{'scenario':44} {'method':21} {'coverage':>8} {'below':>5} {'above':>5} {'width':>7}")
    for scenario in chosen:
        start = time.perf_counter()
        for row in coverage(scenario, args.samples, args.resamples, args.seed):
            row["seconds"] = round(time.perf_counter() - start, 1)
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                print(f"{row['scenario']:44} {row['method']:21} {row['coverage']:8.3f} {row['below']:5d} "
                      f"{row['above']:5d} {row['mean_width']:7.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
