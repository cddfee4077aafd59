"""Steering directions from paired activations: fitting, diagnostics, layer choice, controls.

Why: a steering vector is a per-layer direction ``v_l`` separating the positive side of each
pair from its negative (Appendix D). This module fits it from pooled activations (see
``steering.activations``), measures how well it separates held-out data, picks layers from those
diagnostics only, draws norm-matched random controls, and stores vectors as safetensors.

Fitting (per layer ``l``, on ``d_i = pos_i - neg_i``):

- ``logistic`` (the paper's): rows ``+d_i`` (label 1) and ``-d_i`` (label 0); every feature is
  divided by its standard deviation over these symmetric rows (their mean is 0 by symmetry,
  so sigma is the root mean square; a zero-variance feature keeps sigma 1); an L2 logistic
  regression without intercept is fitted on the standardized rows and its weights are mapped
  back to activation units, ``w_x = w_z / sigma``. Without the back-map the direction would be
  stretched along high-variance features.
- ``ridge``: the same with a ridge classifier (labels +-1), mapped back the same way.
- ``mean_diff``: the mean of ``d_i``.

The unit direction is ``u_l = w_l / ||w_l||`` with the sign making ``mean_i(d_i . u_l) > 0``;
``scale="gap"`` stores ``v_l = u_l * mean_i(d_i . u_l)`` (one mean paired gap, so multiplier 1
moves a negative by one gap along ``u``), ``scale="unit"`` stores ``u_l``, and ``scale="coef"``
stores the mapped-back coefficient vector itself, ``w_l`` with the same sign as ``u_l``
(Appendix D.2: "map the coefficient vector back into activation coordinates to get the saved
vector"; for ``mean_diff`` it is the mean difference). Its norm depends on the regularisation
and the layer's scale, so ``results/vectors/{model}/norms.parquet`` and the steering figures
give every vector's per-layer norm. Fitting is in float64; vectors are stored as float32 [L, d].
"""

from __future__ import annotations

import hashlib
import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

log = logging.getLogger(__name__)


ESTIMATORS = ("logistic", "mean_diff", "ridge")


SCALES = ("gap", "unit", "coef")


METRICS = ("auroc", "tpr_at_5fpr", "paired_accuracy", "mean_gap", "cosine_gap")


DIAGNOSTIC_SCHEMA: dict[str, pl.DataType] = {
    "layer": pl.Int64, "split": pl.Utf8, "auroc": pl.Float64, "auroc_std": pl.Float64,
    "tpr_at_5fpr": pl.Float64, "paired_accuracy": pl.Float64, "mean_gap": pl.Float64,
    "cosine_gap": pl.Float64, "n_pairs": pl.Int64, "vector_norm": pl.Float64}


DIAGNOSTIC_COLUMNS = list(DIAGNOSTIC_SCHEMA)


REQUIRED_METADATA = ("name", "concept", "source", "estimator", "pooling", "scale", "kind",
                     "seed", "of")


MAX_FPR = 0.05


# ----------------------------------------------------------------------------- fitting


def _check_pairs(pos: Any, neg: Any, what: str = "pos/neg") -> tuple[np.ndarray, np.ndarray]:
    pos, neg = np.asarray(pos), np.asarray(neg)
    if pos.ndim != 3 or pos.shape != neg.shape:
        raise ValueError(f"{what}: expected two arrays [n_pairs, L, d] of the same shape, got "
                         f"{pos.shape} and {neg.shape}")
    if pos.shape[0] == 0:
        raise ValueError(f"{what}: no pairs")
    if not (np.isfinite(pos).all() and np.isfinite(neg).all()):
        raise ValueError(f"{what}: activations contain NaN or inf (a span_mean cache with "
                         "span-less rows?)")
    return pos, neg


def _options(estimator: str, scale: str) -> None:
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator {estimator!r}: expected one of {ESTIMATORS}")
    if scale not in SCALES:
        raise ValueError(f"scale {scale!r}: expected one of {SCALES}")


def standardize(diffs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z rows [2n, d], labels [2n], sigma [d]) for the symmetric rows +d_i (1), -d_i (0).

    sigma is each feature's standard deviation over the rows (their mean is exactly 0), 1 for
    a zero-variance feature."""
    x = np.concatenate([diffs, -diffs]).astype(np.float64)
    y = np.concatenate([np.ones(len(diffs)), np.zeros(len(diffs))])
    sigma = np.sqrt(np.mean(diffs.astype(np.float64) ** 2, axis=0))
    sigma[~(sigma > 0)] = 1.0
    return x / sigma, y, sigma


def unit_direction(diffs: np.ndarray, *, estimator: str = "logistic", C: float = 1.0,
                   ridge_alpha: float = 1.0, seed: int = 0) -> np.ndarray:
    """Unit direction [d] (float64) from one layer's paired differences [n, d], signed so the
    mean projected gap is positive; all zeros when the fit is degenerate (no signal at all)."""
    w = coefficient_vector(diffs, estimator=estimator, C=C, ridge_alpha=ridge_alpha, seed=seed)
    norm = float(np.linalg.norm(w))
    return w / norm if norm > 0 else w


def coefficient_vector(diffs: np.ndarray, *, estimator: str = "logistic", C: float = 1.0,
                       ridge_alpha: float = 1.0, seed: int = 0) -> np.ndarray:
    """The fitted weight vector [d] (float64) in activation coordinates (``w_x = w_z / sigma``;
    the mean difference for ``mean_diff``), signed so the mean projected gap is positive; all
    zeros when the fit is degenerate."""
    diffs = np.asarray(diffs, dtype=np.float64)
    if estimator == "mean_diff":
        w = diffs.mean(axis=0)
    else:
        from sklearn.linear_model import LogisticRegression, RidgeClassifier

        z, y, sigma = standardize(diffs)
        if estimator == "logistic":
            clf = LogisticRegression(C=C, fit_intercept=False, max_iter=5000, random_state=seed)
        elif estimator == "ridge":
            clf = RidgeClassifier(alpha=ridge_alpha, fit_intercept=False, random_state=seed)
            y = 2 * y - 1
        else:
            raise ValueError(f"estimator {estimator!r}: expected one of {ESTIMATORS}")
        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            clf.fit(z, y)
        for w_ in caught:  # a non-converged fit is logged; anything else passes through
            if issubclass(w_.category, ConvergenceWarning):
                log.warning("%s fit did not converge: %s", estimator, w_.message)
            else:
                warnings.warn(w_.message, w_.category, stacklevel=2)
        w = np.asarray(clf.coef_, dtype=np.float64).reshape(-1) / sigma
    norm = float(np.linalg.norm(w))
    if not (norm > 0 and math.isfinite(norm)):
        return np.zeros(diffs.shape[1])
    return -w if float(np.mean(diffs @ (w / norm))) < 0 else w


def fit_directions(pos: np.ndarray, neg: np.ndarray, *, estimator: str = "logistic",
                   C: float = 1.0, ridge_alpha: float = 1.0, scale: str = "gap",
                   seed: int = 0) -> np.ndarray:
    """Per-layer steering vectors [L, d] float32 from paired activations [n, L, d] (see the
    module docstring). A layer whose differences carry no signal gets a zero vector."""
    _options(estimator, scale)
    pos, neg = _check_pairs(pos, neg)
    n_layers, d = pos.shape[1:]
    out = np.zeros((n_layers, d), dtype=np.float64)
    for layer in range(n_layers):
        diffs = pos[:, layer].astype(np.float64) - neg[:, layer].astype(np.float64)
        w = coefficient_vector(diffs, estimator=estimator, C=C, ridge_alpha=ridge_alpha,
                               seed=seed)
        if not w.any():
            log.warning("layer %d: degenerate fit (zero direction)", layer)
            continue
        u = w / np.linalg.norm(w)
        out[layer] = {"gap": u * float(np.mean(diffs @ u)), "unit": u, "coef": w}[scale]
    return out.astype(np.float32)


# ----------------------------------------------------------------------------- diagnostics


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, max_fpr: float = MAX_FPR) -> float:
    """The largest TPR on the ROC curve whose FPR is <= ``max_fpr``."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    return float(tpr[fpr <= max_fpr + 1e-12].max())


def _auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def _row_cosines(x: np.ndarray, u: np.ndarray) -> np.ndarray:
    """cos(x_i, u) per row; NaN where either norm is zero."""
    den = np.linalg.norm(x, axis=1) * np.linalg.norm(u)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (x @ u) / np.where(den > 0, den, 1.0), np.nan)


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(np.mean(x[np.isfinite(x)])) if np.isfinite(x).any() else math.nan


def _paired(pos: np.ndarray, neg: np.ndarray, u: np.ndarray) -> dict[str, float]:
    """Metrics of one layer's pairs (pos, neg [n, d]) along the unit direction u."""
    p, q = pos @ u, neg @ u
    labels = np.concatenate([np.ones(len(p)), np.zeros(len(q))])
    scores = np.concatenate([p, q])
    return {
        "auroc": _auroc(labels, scores),
        "tpr_at_5fpr": tpr_at_fpr(labels, scores),
        # ties (e.g. a zero vector) count half: chance level, not failure
        "paired_accuracy": float(np.mean((p > q) + 0.5 * (p == q))),
        "mean_gap": float(np.mean(p - q)),
        "cosine_gap": _nanmean(_row_cosines(pos, u)) - _nanmean(_row_cosines(neg, u)),
    }


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else np.zeros_like(v)


def _cv_rows(pos: np.ndarray, neg: np.ndarray, pair_ids: np.ndarray, vectors: np.ndarray, *,
             estimator: str, C: float, ridge_alpha: float, folds: int,
             seed: int) -> list[dict[str, Any]]:
    """Grouped K-fold CV: the two rows (+d_i, -d_i) of a pair always share a fold; each fold
    refits the direction on the other folds' pairs; held-out rows are scored by projection on
    the unit direction and pooled over folds."""
    from sklearn.model_selection import GroupKFold

    n = len(pos)
    groups = np.concatenate([pair_ids, pair_ids])
    n_groups = len(set(pair_ids.tolist()))
    if n_groups < folds:
        raise ValueError(f"grouped cross-validation needs at least as many pairs as folds: "
                         f"{n_groups} pairs, {folds} folds")
    splitter = GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    splits = []
    for train_rows, test_rows in splitter.split(np.zeros((2 * n, 1)), groups=groups):
        train = np.unique(train_rows % n)
        test = np.unique(test_rows % n)
        if np.intersect1d(train, test).size:  # cannot happen with GroupKFold; guard anyway
            raise RuntimeError("a pair's two rows landed in different folds")
        splits.append((train, test))
    rows = []
    for layer in range(pos.shape[1]):
        p_all = pos[:, layer].astype(np.float64)
        q_all = neg[:, layer].astype(np.float64)
        d_all = p_all - q_all
        held_p, held_q, fold_auc = [], [], []
        held_pos, held_neg = [], []
        for train, test in splits:
            u = unit_direction(d_all[train], estimator=estimator, C=C, ridge_alpha=ridge_alpha,
                               seed=seed)
            proj = d_all[test] @ u
            fold_auc.append(_auroc(np.r_[np.ones(len(test)), np.zeros(len(test))],
                                   np.r_[proj, -proj]))
            held_p.append(p_all[test] @ u)
            held_q.append(q_all[test] @ u)
            held_pos.append(_row_cosines(p_all[test], u))
            held_neg.append(_row_cosines(q_all[test], u))
        p, q = np.concatenate(held_p), np.concatenate(held_q)
        gap = p - q
        labels = np.r_[np.ones(len(gap)), np.zeros(len(gap))]
        scores = np.r_[gap, -gap]
        rows.append({
            "layer": layer, "split": "cv", "auroc": _auroc(labels, scores),
            "auroc_std": float(np.std(fold_auc)), "tpr_at_5fpr": tpr_at_fpr(labels, scores),
            "paired_accuracy": float(np.mean((gap > 0) + 0.5 * (gap == 0))),
            "mean_gap": float(np.mean(gap)),
            "cosine_gap": _nanmean(np.concatenate(held_pos)) - _nanmean(np.concatenate(held_neg)),
            "n_pairs": n, "vector_norm": float(np.linalg.norm(vectors[layer])),
        })
    return rows


def diagnostics(train_pos: np.ndarray | None, train_neg: np.ndarray | None,
                train_pair_ids: Sequence[Any] | None,
                validation: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None, *,
                estimator: str = "logistic", C: float = 1.0, ridge_alpha: float = 1.0,
                scale: str = "gap", folds: int | None = 5, seed: int = 0,
                vectors: np.ndarray | None = None) -> pl.DataFrame:
    """Per-layer diagnostics of a steering direction, long by split.

    Fitted vectors (``vectors=None``): the direction is fitted on the training pairs with
    ``fit_directions`` (same options); with ``folds`` (an int) a grouped K-fold CV adds rows
    with split ``"cv"`` (pairs grouped by ``train_pair_ids``; fewer distinct pairs than folds
    is a ValueError; ``folds=None`` skips CV). Given ``vectors`` [L, d] (e.g. a random
    control): nothing is fitted and CV is skipped; the training arguments and fitting options
    are ignored and only the validation splits are scored with those vectors.

    Every ``validation`` split ``name -> (pos, neg)`` ([n, L, d] each) adds rows with that
    split name: ``auroc`` and ``tpr_at_5fpr`` of proj(pos) vs proj(neg) on the unit direction
    (each side's activation, not differences), ``paired_accuracy`` (share of pairs with
    proj(pos) > proj(neg); ties count half), ``mean_gap`` (mean proj(pos) - proj(neg),
    activation units), ``cosine_gap`` (mean cos(pos, u) - mean cos(neg, u)), ``n_pairs``.
    CV rows score held-out pairs the same way; their ``auroc`` is over the held-out symmetric
    rows pooled over folds and ``auroc_std`` is its spread across folds (null elsewhere).
    ``vector_norm`` is ||v_l|| of the scored (full-data or given) vector. Rows: CV first, then
    the validation splits in the mapping's order; layers ascending within a split. A score that
    is undefined (``auroc_std`` outside CV, a cosine gap with no nonzero row) is null."""
    validation = dict(validation or {})
    rows: list[dict[str, Any]] = []
    if vectors is None:
        if train_pos is None or train_neg is None:
            raise ValueError("diagnostics needs training pairs (train_pos, train_neg) or "
                             "given vectors")
        _options(estimator, scale)
        pos, neg = _check_pairs(train_pos, train_neg, "training pairs")
        vec = fit_directions(pos, neg, estimator=estimator, C=C, ridge_alpha=ridge_alpha,
                             scale=scale, seed=seed).astype(np.float64)
        if folds is not None:
            ids = (np.arange(len(pos)) if train_pair_ids is None
                   else np.asarray(list(train_pair_ids)))
            if len(ids) != len(pos):
                raise ValueError(f"{len(ids)} pair ids for {len(pos)} training pairs")
            rows += _cv_rows(pos, neg, ids, vec, estimator=estimator, C=C,
                             ridge_alpha=ridge_alpha, folds=int(folds), seed=seed)
    else:
        vec = np.asarray(vectors, dtype=np.float64)
        if vec.ndim != 2:
            raise ValueError(f"vectors must be [L, d], got shape {vec.shape}")
    for split, (vpos, vneg) in validation.items():
        vpos, vneg = _check_pairs(vpos, vneg, f"validation split {split!r}")
        if vpos.shape[1:] != vec.shape:
            raise ValueError(f"validation split {split!r}: activations [*, {vpos.shape[1]}, "
                             f"{vpos.shape[2]}] do not match vectors {list(vec.shape)}")
        for layer in range(vec.shape[0]):
            m = _paired(vpos[:, layer].astype(np.float64), vneg[:, layer].astype(np.float64),
                        _unit(vec[layer]))
            rows.append({"layer": layer, "split": split, **m, "auroc_std": math.nan,
                         "n_pairs": len(vpos),
                         "vector_norm": float(np.linalg.norm(vec[layer]))})
    return pl.DataFrame(rows, schema=DIAGNOSTIC_SCHEMA).with_columns(
        pl.col(pl.Float64).fill_nan(None))


def select_layers(diagnostics: pl.DataFrame, *, k: int, metric: str = "auroc",
                  split: str = "validation") -> list[int]:
    """The ``k`` layers with the highest ``metric`` on ``split``, averaged over every
    diagnostics table concatenated in ``diagnostics`` (e.g. one per fitted vector); ties go to
    the lower layer; NaN scores are never chosen. Returned in ascending layer order. Uses the
    diagnostics only, never downstream behaviour. NaN and null scores are both missing."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r}: expected one of {METRICS}")
    missing = {"layer", "split", metric} - set(diagnostics.columns)
    if missing:
        raise ValueError(f"diagnostics table lacks columns {sorted(missing)}")
    sub = diagnostics.filter(pl.col("split") == split)
    if sub.is_empty():
        raise ValueError(f"no diagnostics rows for split {split!r} (have "
                         f"{sorted({str(s) for s in diagnostics['split'].to_list()})})")
    score = (sub.group_by(pl.col("layer").cast(pl.Int64))
             .agg(pl.col(metric).cast(pl.Float64, strict=False).fill_nan(None).mean())
             .drop_nulls(metric))
    if score.is_empty():
        raise ValueError(f"every {metric} on split {split!r} is NaN; no layer can be chosen")
    ranked = sorted(score.iter_rows(), key=lambda kv: (-kv[1], kv[0]))
    return sorted(int(layer) for layer, _ in ranked[:k])


# ----------------------------------------------------------------------------- controls, I/O


def control_seed(seed: int, vector: str, k: int) -> int:
    """The seed of random control ``k`` of fitted vector ``vector`` (``{concept}_{source}``):
    the sha256 of the canonical JSON of (``seed``, ``vector``, ``k``), read as a 128-bit
    integer (numpy's ``SeedSequence`` takes it whole). Every control of every vector gets its
    own stream; the configured ``seed`` moves them all. (Reading the name's bytes as one
    integer mod 2**32 kept only its first four bytes, so every control was the same draw.)"""
    from motivation_profiles.core.hashing import canonical_json

    key = canonical_json(["random_control", int(seed), str(vector), int(k)])
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:16], "big")


def random_controls(real: np.ndarray, *, n: int, seed: int) -> list[np.ndarray]:
    """``n`` Gaussian random vectors [L, d] float32, each layer rescaled to ||real_l|| (a zero
    layer stays zero). Same seed, same vectors."""
    real = np.asarray(real, dtype=np.float64)
    if real.ndim != 2:
        raise ValueError(f"real vectors must be [L, d], got shape {real.shape}")
    rng = np.random.default_rng(np.random.SeedSequence(int(seed)))
    norms = np.linalg.norm(real, axis=1, keepdims=True)
    out = []
    for _ in range(n):
        g = rng.standard_normal(real.shape)
        g *= norms / np.linalg.norm(g, axis=1, keepdims=True)
        out.append(g.astype(np.float32))
    return out


NORM_SCHEMA: dict[str, pl.DataType] = {
    "vector": pl.Utf8, "kind": pl.Utf8, "of": pl.Utf8, "scale": pl.Utf8, "layer": pl.Int64,
    "norm": pl.Float64}
"""The columns of :func:`vector_norms` (the norms rule adds ``model`` and ``steered``)."""


def vector_norms(vectors: Mapping[str, tuple[np.ndarray, Mapping[str, str]]]) -> pl.DataFrame:
    """Per vector and layer, the L2 norm of ``v_l`` (what multiplier 1 adds at that layer).

    ``vectors`` maps a vector name to ``(vectors [L, d], metadata)`` as ``load_vectors``
    returns them; rows follow the mapping's order, then layer."""
    rows = []
    for name, (arr, meta) in vectors.items():
        arr = np.asarray(arr, dtype=np.float64)
        if arr.ndim != 2:
            raise ValueError(f"{name}: vectors must be [L, d], got shape {arr.shape}")
        for layer, norm in enumerate(np.linalg.norm(arr, axis=1)):
            rows.append({"vector": name, "kind": meta.get("kind"), "of": meta.get("of"),
                         "scale": meta.get("scale"), "layer": layer, "norm": float(norm)})
    return pl.DataFrame(rows, schema=NORM_SCHEMA)


def save_vectors(path: str | Path, vectors: np.ndarray, metadata: Mapping[str, str]) -> None:
    """Write ``vectors`` [L, d] as float32 tensor ``vectors`` of a safetensors file with
    string ``metadata`` (the workflow writes the keys in ``REQUIRED_METADATA``; a missing one is
    logged, not refused), atomically."""
    from safetensors.numpy import save_file

    from motivation_profiles.core.io import atomic_path

    arr = np.ascontiguousarray(np.asarray(vectors), dtype=np.float32)
    if arr.ndim != 2 or not np.isfinite(arr).all():
        raise ValueError(f"vectors must be a finite [L, d] array, got shape {arr.shape}")
    bad = {k: type(v).__name__ for k, v in metadata.items()
           if not isinstance(k, str) or not isinstance(v, str)}
    if bad:
        raise TypeError(f"safetensors metadata must map str to str; not strings: {bad}")
    missing = [k for k in REQUIRED_METADATA if k not in metadata]
    if missing:
        log.warning("%s: vector metadata lacks %s", path, missing)
    with atomic_path(path) as tmp:
        save_file({"vectors": arr}, str(tmp), metadata=dict(metadata))


def load_vectors(path: str | Path) -> tuple[np.ndarray, dict[str, str]]:
    """(vectors [L, d] float32, metadata) as written by ``save_vectors``."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as fh:
        meta = dict(fh.metadata() or {})
        if "vectors" not in fh.keys():
            raise ValueError(f"{path}: no tensor 'vectors' (has {list(fh.keys())})")
        arr = fh.get_tensor("vectors")
    return np.asarray(arr, dtype=np.float32), meta


__all__ = ["ESTIMATORS", "SCALES", "METRICS", "DIAGNOSTIC_COLUMNS", "REQUIRED_METADATA",
           "standardize", "unit_direction", "coefficient_vector", "fit_directions", "tpr_at_fpr",
           "diagnostics", "select_layers", "vector_norms", "control_seed", "random_controls",
           "save_vectors", "load_vectors"]

