"""Evaluation of the patch classifiers: splits, metrics with 95% CIs, and a random-forest
baseline.

Splits (all seeded, all depending only on the set of ids, not their order):

- ``grouped``: by patient. A 60/20/20 train/dev/test split of the *patients*, or a grouped
  k-fold where each fold's test set is a group of patients and the remaining patients split
  75/25 into train/dev. No patient has biopsies on both sides of any split.
- ``biopsy``: the seed's random split of the biopsies themselves, ignoring patients (a
  patient's biopsies land in train and test): only for comparison, since a model can then
  score by recognising the patient.

Labels: 1 where the gene's TPM is above a median. ``labels="train"`` (default) takes the median
of the non-test rows of each split, so no test row shapes the threshold; ``labels="cohort"``
uses the median of all biopsies, as the seed did (a mild leak).

Metrics on the held-out predictions: accuracy at P = 0.5 with a Wilson 95% CI, ROC AUC with a
DeLong 95% CI (:func:`pipelines.stats.classify.auc_ci`) or a patient-cluster bootstrap CI (which
allows for biopsies of one patient being correlated). K-fold predictions are pooled over folds
and scored once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import roc_auc_score

from pipelines.exceptions import InputError
from pipelines.features.extract import compute_features
from pipelines.spatial.train import TrainConfig, predict_proba, train_model
from pipelines.stats.classify import auc_ci, rf_split

__all__ = [
    "CI_METHODS",
    "EvalResult",
    "Split",
    "accuracy_ci",
    "biopsy_kfold",
    "biopsy_split",
    "cluster_bootstrap_auc_ci",
    "evaluate_cnn",
    "evaluate_rf",
    "grouped_kfold",
    "grouped_split",
    "make_splits",
    "median_labels",
    "metrics",
    "patch_features",
]

CI_METHODS = ("delong", "cluster-bootstrap")
RF_FAMILIES = ("firstorder", "glcm", "glszm", "ngtdm")


# --------------------------------------------------------------------------- splits


@dataclass(frozen=True)
class Split:
    """Row positions (int arrays) of one train/dev/test split; ``fold`` is its k-fold index."""

    train: np.ndarray
    dev: np.ndarray
    test: np.ndarray
    fold: int = 0

    def check_disjoint(self, require_test: bool = True) -> None:
        """Raise InputError if two parts share a row, or train (or, if required, test) is
        empty."""
        parts = (self.train, self.dev, self.test)
        if len(self.train) == 0 or (require_test and len(self.test) == 0):
            raise InputError("a split has an empty train or test set (too few patients?)")
        if len(np.unique(np.concatenate(parts))) != sum(len(p) for p in parts):
            raise InputError("split parts overlap")


def _part_sizes(n: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    """Return (n_train, n_dev, n_test) for n units and (train, dev, test) fractions."""
    f = np.asarray(fractions, dtype=float)
    if f.shape != (3,) or np.any(f < 0) or not np.isclose(f.sum(), 1.0):
        raise InputError(f"fractions must be three non-negative numbers summing to 1, got "
                         f"{tuple(fractions)}")
    n_test = int(round(f[2] * n))
    n_dev = int(round(f[1] * n))
    if f[2] > 0:
        n_test = max(1, n_test)
    if f[1] > 0:
        n_dev = max(1, n_dev)
    n_train = n - n_dev - n_test
    if n_train < 1:
        raise InputError(f"{n} units are too few for a train/dev/test split {tuple(fractions)}")
    return n_train, n_dev, n_test


def _positions(groups: np.ndarray, chosen) -> np.ndarray:
    return np.flatnonzero(np.isin(groups, list(chosen)))


def grouped_split(groups, fractions=(0.6, 0.2, 0.2), seed: int = 0) -> Split:
    """Return a train/dev/test :class:`Split` of rows by group (patient).

    The sorted unique groups are shuffled with ``numpy.random.default_rng(seed)`` and cut into
    ``fractions`` of the *patients* (at least one in each non-zero part); every row follows its
    patient.
    """
    g = np.asarray(groups).astype(str)
    pats = np.array(sorted(set(g)))
    perm = np.random.default_rng(seed).permutation(len(pats))
    n_tr, n_dev, _ = _part_sizes(len(pats), fractions)
    tr, dv, te = pats[perm[:n_tr]], pats[perm[n_tr:n_tr + n_dev]], pats[perm[n_tr + n_dev:]]
    s = Split(_positions(g, tr), _positions(g, dv), _positions(g, te))
    s.check_disjoint(require_test=fractions[2] > 0)
    return s


def biopsy_split(n: int, fractions=(0.6, 0.2, 0.2), seed: int = 0) -> Split:
    """Return the seed's random train/dev/test split of ``n`` rows, ignoring patients."""
    perm = np.random.default_rng(seed).permutation(n)
    n_tr, n_dev, _ = _part_sizes(n, fractions)
    s = Split(np.sort(perm[:n_tr]), np.sort(perm[n_tr:n_tr + n_dev]),
              np.sort(perm[n_tr + n_dev:]))
    s.check_disjoint()
    return s


def grouped_kfold(groups, k: int = 5, seed: int = 0, dev_fraction: float = 0.25) -> list[Split]:
    """Return ``k`` grouped folds: fold i tests the i-th of k near-equal groups of shuffled
    patients; the other patients split into train and dev (``dev_fraction`` of them, grouped).
    Every row is tested exactly once."""
    g = np.asarray(groups).astype(str)
    pats = np.array(sorted(set(g)))
    if not 2 <= k <= len(pats):
        raise InputError(f"k must be between 2 and the number of patients ({len(pats)}), "
                         f"got {k}")
    perm = np.random.default_rng(seed).permutation(len(pats))
    folds = []
    for i, test_pats in enumerate(np.array_split(pats[perm], k)):
        rest = np.setdiff1d(pats, test_pats)
        rng = np.random.default_rng([seed, i])
        rest = rest[rng.permutation(len(rest))]
        n_dev = max(1, int(round(dev_fraction * len(rest)))) if dev_fraction > 0 else 0
        dev_pats, train_pats = rest[:n_dev], rest[n_dev:]
        s = Split(_positions(g, train_pats), _positions(g, dev_pats), _positions(g, test_pats),
                  fold=i)
        s.check_disjoint()
        folds.append(s)
    return folds


def biopsy_kfold(n: int, k: int = 5, seed: int = 0, dev_fraction: float = 0.25) -> list[Split]:
    """Return ``k`` folds over rows ignoring patients (for comparison only)."""
    return grouped_kfold(np.arange(n).astype(str), k=k, seed=seed, dev_fraction=dev_fraction)


def make_splits(groups, split: str = "grouped", evaluation: str = "split", seed: int = 0,
                k: int = 5, fractions=(0.6, 0.2, 0.2)) -> list[Split]:
    """Return the splits of one evaluation: a single 60/20/20 split (``evaluation="split"``) or
    ``k`` folds (``"kfold"``), by patient (``split="grouped"``) or by biopsy (``"biopsy"``)."""
    g = np.asarray(groups).astype(str)
    if split not in ("grouped", "biopsy"):
        raise InputError(f"split must be 'grouped' or 'biopsy', got {split!r}")
    if evaluation == "split":
        s = grouped_split(g, fractions, seed) if split == "grouped" else biopsy_split(
            len(g), fractions, seed)
        return [s]
    if evaluation == "kfold":
        return grouped_kfold(g, k, seed) if split == "grouped" else biopsy_kfold(len(g), k, seed)
    raise InputError(f"evaluation must be 'split' or 'kfold', got {evaluation!r}")


# --------------------------------------------------------------------------- labels, metrics


def median_labels(tpm, reference_idx=None) -> tuple[np.ndarray, float]:
    """Return (labels (n,) int, threshold): 1 where ``tpm`` > the median of
    ``tpm[reference_idx]`` (all rows when None), else 0."""
    v = np.asarray(tpm, dtype=float)
    if np.isnan(v).any():
        raise InputError("expression values are missing; drop those biopsies first")
    ref = v if reference_idx is None else v[np.asarray(reference_idx, dtype=int)]
    thr = float(np.median(ref))
    return (v > thr).astype(int), thr


def accuracy_ci(y, prob, threshold: float = 0.5, level: float = 0.95) -> tuple[float, float,
                                                                                float]:
    """Return (accuracy, lower, upper): the fraction of ``prob > threshold`` equal to the 0/1
    labels ``y``, with a Wilson score interval."""
    y = np.asarray(y).astype(int)
    pred = (np.asarray(prob, dtype=float) > threshold).astype(int)
    n = len(y)
    if n == 0:
        return np.nan, np.nan, np.nan
    acc = float(np.mean(pred == y))
    z = stats.norm.ppf(0.5 + level / 2)
    centre = (acc + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(acc * (1 - acc) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return acc, float(max(0.0, centre - half)), float(min(1.0, centre + half))


def cluster_bootstrap_auc_ci(y, score, groups, n_boot: int = 2000, seed: int = 0,
                             level: float = 0.95) -> tuple[float, float, float]:
    """Return (AUC, lower, upper) with a percentile CI from resampling *patients* with
    replacement (all of a drawn patient's biopsies enter together). Resamples with a single
    class are skipped. NaNs when the data have a single class."""
    y = np.asarray(y).astype(int)
    s = np.asarray(score, dtype=float)
    g = np.asarray(groups).astype(str)
    if len(np.unique(y)) < 2:
        return np.nan, np.nan, np.nan
    auc = float(roc_auc_score(y, s))
    pats = np.unique(g)
    rows = [np.flatnonzero(g == p) for p in pats]
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = np.concatenate([rows[i] for i in rng.integers(0, len(pats), len(pats))])
        yb = y[idx]
        if 0 < yb.sum() < len(yb):
            boots.append(roc_auc_score(yb, s[idx]))
    if len(boots) < 10:
        return auc, np.nan, np.nan
    lo, hi = np.quantile(boots, [0.5 - level / 2, 0.5 + level / 2])
    return auc, float(lo), float(hi)


def metrics(y, prob, groups=None, ci_method: str = "delong", seed: int = 0) -> dict:
    """Return accuracy and AUC with 95% CIs of held-out probabilities ``prob`` for labels ``y``:
    ``{"n", "n_pos", "accuracy", "accuracy_low95", "accuracy_high95", "auc", "auc_low95",
    "auc_high95", "ci_method"}``. ``ci_method``: "delong" or "cluster-bootstrap" (needs
    ``groups``)."""
    if ci_method not in CI_METHODS:
        raise InputError(f"ci_method must be one of {CI_METHODS}, got {ci_method!r}")
    y = np.asarray(y).astype(int)
    acc = accuracy_ci(y, prob)
    if ci_method == "delong":
        auc = auc_ci(y, prob, method="delong")
    else:
        if groups is None:
            raise InputError("the cluster bootstrap needs the patient of every row")
        auc = cluster_bootstrap_auc_ci(y, prob, groups, seed=seed)
    return {"n": int(len(y)), "n_pos": int(y.sum()), "accuracy": acc[0],
            "accuracy_low95": acc[1], "accuracy_high95": acc[2], "auc": auc[0],
            "auc_low95": auc[1], "auc_high95": auc[2], "ci_method": ci_method}


# --------------------------------------------------------------------------- evaluations


@dataclass
class EvalResult:
    """Held-out predictions of one model over one set of splits.

    ``rows``: positions of the tested rows (pooled over folds); ``prob``: P(label = 1) of those
    rows; ``labels``: their labels; ``folds``: per split n_train, n_dev, n_test, threshold,
    best_epoch, seconds, seconds_per_epoch; ``metrics``: see :func:`metrics`.
    """

    model: str
    rows: np.ndarray
    prob: np.ndarray
    labels: np.ndarray
    folds: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)

    @property
    def n_train(self) -> int:
        """Mean number of training rows (train + dev for the forest) over the folds."""
        return int(round(np.mean([f["n_train"] for f in self.folds])))


def _fold_labels(tpm, s: Split, labels: str, cohort_labels=None) -> tuple[np.ndarray, float]:
    if labels == "train":
        return median_labels(tpm, np.concatenate([s.train, s.dev]))
    if labels == "cohort":
        if cohort_labels is not None:
            lab = np.asarray(cohort_labels).astype(int)
            return lab, float("nan")
        return median_labels(tpm)
    raise InputError(f"labels must be 'train' or 'cohort', got {labels!r}")


def _finish(res: EvalResult, groups, ci_method: str, seed: int) -> EvalResult:
    order = np.argsort(res.rows, kind="stable")
    res.rows, res.prob, res.labels = res.rows[order], res.prob[order], res.labels[order]
    g = None if groups is None else np.asarray(groups).astype(str)[res.rows]
    res.metrics = metrics(res.labels, res.prob, g, ci_method, seed)
    return res


def evaluate_cnn(X, tpm, splits: Sequence[Split], config: TrainConfig | None = None,
                 labels: str = "train", cohort_labels=None, groups=None,
                 ci_method: str = "delong") -> EvalResult:
    """Train a CNN per split (train rows, early stopping on dev rows) and predict its test rows.

    ``X``: patches (n, C, H, W); ``tpm``: expression (n,). Returns an :class:`EvalResult`
    with the pooled test predictions and their metrics.
    """
    cfg = config or TrainConfig()
    X = np.asarray(X, dtype=np.float32)
    rows, probs, labs, folds = [], [], [], []
    for s in splits:
        y, thr = _fold_labels(tpm, s, labels, cohort_labels)
        tr = train_model(X[s.train], y[s.train], X[s.dev] if len(s.dev) else None,
                         y[s.dev] if len(s.dev) else None, cfg)
        p = predict_proba(tr.model, X[s.test], tta=cfg.tta)
        rows.append(s.test)
        probs.append(p)
        labs.append(y[s.test])
        folds.append({"fold": s.fold, "n_train": len(s.train), "n_dev": len(s.dev),
                      "n_test": len(s.test), "threshold": thr, "best_epoch": tr.best_epoch,
                      "epochs": len(tr.history), "seconds": tr.seconds,
                      "seconds_per_epoch": tr.seconds_per_epoch})
    res = EvalResult("cnn", np.concatenate(rows), np.concatenate(probs), np.concatenate(labs),
                     folds)
    return _finish(res, groups, ci_method, cfg.seed)


def patch_features(X, channels: Sequence[str] | None = None, adjacent: int = 0,
                   families: Sequence[str] = RF_FAMILIES) -> pd.DataFrame:
    """Return IBSI features of every patch as a DataFrame (n rows, one column per sequence x
    feature, named ``<sequence>__<feature>``).

    Each sequence's block of ``2 * adjacent + 1`` channels is one (slices, H, W) image and the
    whole patch is the ROI; features from :func:`pipelines.features.extract.compute_features`
    (32-bin fixed bin number, GLCM averaged over directions). NaN where a feature is undefined.
    """
    X = np.asarray(X, dtype=np.float32)
    depth = 2 * adjacent + 1
    if X.ndim != 4 or X.shape[1] % depth:
        raise InputError(f"patches (n, C, H, W) with C a multiple of {depth}, got {X.shape}")
    n_seq = X.shape[1] // depth
    names = list(channels) if channels is not None else [f"ch{i}" for i in range(n_seq)]
    if len(names) != n_seq:
        raise InputError(f"{len(names)} sequence names for {n_seq} sequences")
    mask = np.ones((depth, *X.shape[2:]), dtype=bool)
    rows = []
    for patch in X:
        row = {}
        for s, name in enumerate(names):
            img = patch[s * depth:(s + 1) * depth]
            if float(img.max()) == float(img.min()):
                img = img.copy()
                img.flat[0] += 1e-6  # a flat patch: avoid a zero-width discretisation range
            f = compute_features(img, mask, (1.0, 1.0, 1.0), families=families)
            row.update({f"{name}__{k}": v for k, v in f.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def evaluate_rf(features: pd.DataFrame, tpm, splits: Sequence[Split], seed: int = 0,
                labels: str = "train", cohort_labels=None, groups=None,
                ci_method: str = "delong", n_estimators: int = 300) -> EvalResult:
    """Random forest on per-patch features (:func:`patch_features`): trained on each split's
    train + dev rows (a forest needs no early stopping), scored on its test rows.

    Wraps :func:`pipelines.stats.classify.rf_split` (median imputation, ``max_features="sqrt"``,
    ``random_state=seed``, no permutation importances). Returns an :class:`EvalResult`.
    """
    F = features.reset_index(drop=True)
    rows, probs, labs, folds = [], [], [], []
    for s in splits:
        y, thr = _fold_labels(tpm, s, labels, cohort_labels)
        train = np.concatenate([s.train, s.dev])
        r = rf_split(F, y, train, s.test, seed=seed, n_estimators=n_estimators,
                     permutation_repeats=0)
        rows.append(s.test)
        probs.append(r.scores.to_numpy())
        labs.append(y[s.test])
        folds.append({"fold": s.fold, "n_train": len(train), "n_dev": 0, "n_test": len(s.test),
                      "threshold": thr, "best_epoch": None, "epochs": None, "seconds": None,
                      "seconds_per_epoch": None})
    res = EvalResult("rf", np.concatenate(rows), np.concatenate(probs), np.concatenate(labs),
                     folds)
    return _finish(res, groups, ci_method, seed)
