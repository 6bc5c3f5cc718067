"""What an embedding knows: neighbour and linear-probe figures per labelled column, and the embedding's health.

Pure functions of arrays (numpy + scikit-learn), so the same code scores the bundle's embedding, its untrained
twin and PCA of the pixels in one run (``precompute.report``), and the benchmarks reuse it.

- categorical labels: k-NN purity (the share of each test object's k nearest *training* objects, by cosine, that
  share its label) and the error of a logistic regression on standardised features, over ``n_splits`` stratified
  75/25 splits; mean and standard error over the splits.
- continuous values: k-NN regression R^2 (mean of the k nearest training values), ridge R^2 on standardised
  features, and the Spearman correlation of the k-NN prediction with the truth.
- health: the share of variance along the first principal component, the participation ratio
  (sum lambda)^2 / sum lambda^2 (the effective number of dimensions used), and the median cosine between random
  pairs of objects (near 1 means every object looks alike to a cosine search).
"""
from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd

K = 10
N_SPLITS = 10
TEST_SIZE = 0.25
MIN_PER_CLASS = 10
# An embedding is flagged as collapsed when one direction holds more than half its variance or it uses fewer than
# ~3 effective dimensions; a median random-pair cosine above 0.9 makes raw cosine scores useless for ranking.
COLLAPSE_PC1_SHARE = 0.5
COLLAPSE_PARTICIPATION = 3.0
CROWDED_MEDIAN_COSINE = 0.9


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def health(embeddings: np.ndarray, n_pairs: int = 20_000, max_rows: int = 50_000, seed: int = 0) -> dict:
    """First-PC variance share, participation ratio and median random-pair cosine (on at most ``max_rows`` rows)."""
    rng = np.random.default_rng(seed)
    x = embeddings
    if len(x) > max_rows:   # sample first: a memory-mapped matrix is never read whole
        x = x[np.sort(rng.choice(len(x), max_rows, replace=False))]
    x = np.asarray(x, dtype=np.float32)
    centred = x - x.mean(axis=0)
    eigen = np.clip(np.linalg.eigvalsh(centred.T.astype(np.float64) @ centred / max(1, len(x) - 1)), 0, None)
    total = float(eigen.sum())
    pc1 = float(eigen.max() / total) if total > 0 else 1.0
    participation = float(total**2 / float((eigen**2).sum())) if total > 0 else 0.0
    unit = l2_normalise(x)
    a, b = rng.integers(0, len(x), size=(2, n_pairs))
    keep = a != b
    median_cos = float(np.median(np.einsum("ij,ij->i", unit[a[keep]], unit[b[keep]]))) if keep.any() else 1.0
    flags = []
    if pc1 > COLLAPSE_PC1_SHARE or participation < COLLAPSE_PARTICIPATION:
        flags.append(f"collapsed: the first principal component holds {pc1:.0%} of the variance and the embedding "
                     f"uses ~{participation:.1f} effective dimensions")
    if median_cos > CROWDED_MEDIAN_COSINE:
        flags.append(f"crowded: two random objects have median cosine {median_cos:.3f}, so raw cosine scores do not "
                     f"rank neighbours; read the percentile instead")
    return {"n": int(len(x)), "dim": int(x.shape[1]), "first_pc_share": pc1, "participation_ratio": participation,
            "median_random_cosine": median_cos, "flags": flags}


def random_pair_cosines(embeddings: np.ndarray, n_pairs: int = 200_000, seed: int = 0,
                        chunk: int = 20_000) -> np.ndarray:
    """Sorted cosines of random pairs of (L2-normalised) rows: the reference distribution for similarity
    percentiles (200 k pairs resolve the top 0.01 %, where a search's neighbours sit)."""
    x = np.asarray(embeddings)
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, len(x), size=(2, n_pairs))
    keep = a != b
    a, b = a[keep], b[keep]
    parts = [np.einsum("ij,ij->i", l2_normalise(x[a[s:s + chunk]]), l2_normalise(x[b[s:s + chunk]]))
             for s in range(0, len(a), chunk)]
    return np.sort(np.concatenate(parts) if parts else np.zeros(0)).astype(np.float32)


# quantile levels stored for percentiles: every per cent, and finer in the top 1 %
SIMILARITY_LEVELS = np.unique(np.concatenate([np.linspace(0, 1, 101), 0.99 + 0.001 * np.arange(1, 10),
                                              0.999 + 0.0001 * np.arange(1, 10)])).round(6)


def similarity_reference(embeddings: np.ndarray, seed: int = 0) -> dict:
    cos = random_pair_cosines(embeddings, seed=seed)
    return {"what": "quantiles of the cosine between random pairs of objects, at the given levels",
            "levels": SIMILARITY_LEVELS.tolist(),
            "quantiles": np.quantile(cos, SIMILARITY_LEVELS).round(6).tolist()}


def percentile(reference: dict, cosine) -> np.ndarray:
    """Percentile (0-100) of ``cosine`` among random pairs, from a ``similarity_reference``."""
    q = np.asarray(reference["quantiles"], dtype=np.float64)
    levels = np.asarray(reference.get("levels", np.linspace(0, 1, len(q))), dtype=np.float64)
    return 100 * np.interp(np.asarray(cosine, dtype=np.float64), q, levels)


def stratified_splits(labels: np.ndarray, n_splits: int = N_SPLITS, seed: int = 0):
    from sklearn.model_selection import StratifiedShuffleSplit

    return list(StratifiedShuffleSplit(n_splits, test_size=TEST_SIZE, random_state=seed)
                .split(np.zeros(len(labels)), labels))


def plain_splits(n: int, n_splits: int = N_SPLITS, seed: int = 0):
    from sklearn.model_selection import ShuffleSplit

    return list(ShuffleSplit(n_splits, test_size=TEST_SIZE, random_state=seed).split(np.zeros(n)))


def knn_indices(train: np.ndarray, test: np.ndarray, k: int) -> np.ndarray:
    """Indices (into ``train``) of each test row's k nearest training rows by cosine."""
    sims = l2_normalise(test) @ l2_normalise(train).T
    k = min(k, train.shape[0])
    part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    return part


def knn_purity(train: np.ndarray, train_labels, test: np.ndarray, test_labels, k: int = K) -> float:
    neighbours = knn_indices(train, test, k)
    same = np.asarray(train_labels)[neighbours] == np.asarray(test_labels)[:, None]
    return float(same.mean())


PROBE_CS = (0.003, 0.03, 0.3, 3.0)
# L-BFGS to a loose tolerance: the error rate settles long before the weights do (the report's minutes are mostly
# these fits: 10 splits + 12 cross-validation fits per test and feature source)
PROBE_TOL, PROBE_MAX_ITER = 1e-3, 300


def probe_error(train: np.ndarray, train_labels, test: np.ndarray, test_labels, c: float = 0.3) -> float:
    """Test error of a logistic regression with inverse regularisation ``c`` on features standardised with the
    training rows' mean and std."""
    return probe_scores(train, train_labels, test, test_labels, c)[0]


def probe_scores(train, train_labels, test, test_labels, c: float = 0.3) -> tuple[float, float | None]:
    """(test error, ROC AUC for two classes else None) of the standardised logistic probe."""
    from sklearn.metrics import roc_auc_score

    model = _probe(c)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # convergence notes on the least regularised candidates
        model.fit(np.asarray(train, dtype=np.float64), np.asarray(train_labels))
    x = np.asarray(test, dtype=np.float64)
    error = float((model.predict(x) != np.asarray(test_labels)).mean())
    classes = model.classes_
    if len(classes) != 2 or len(np.unique(test_labels)) != 2:
        return error, None
    return error, float(roc_auc_score(np.asarray(test_labels) == classes[1], model.predict_proba(x)[:, 1]))


def choose_c(features: np.ndarray, labels, seed: int = 0) -> float:
    """The probe's regularisation, by 3-fold cross-validation on ``features`` (the first split's training rows;
    choosing it once per task and feature source keeps the 10 splits to 10 fits)."""
    from sklearn.model_selection import cross_val_score

    best, best_score = PROBE_CS[0], -np.inf
    for c in PROBE_CS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            score = cross_val_score(_probe(c), np.asarray(features, dtype=np.float64), np.asarray(labels), cv=3).mean()
        if score > best_score:
            best, best_score = c, score
    return best


def _probe(c: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, tol=PROBE_TOL, max_iter=PROBE_MAX_ITER))


def mean_se(values) -> dict:
    """Mean and standard error over the splits; None where undefined (e.g. a constant prediction's Spearman)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    mean = float(v.mean()) if len(v) else None
    se = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else None
    return {"mean": mean, "se": se}


def categorical_scores(features: np.ndarray, labels, splits, k: int = K) -> dict:
    """k-NN purity and probe error over ``splits`` (a list of (train_rows, test_rows))."""
    labels = np.asarray(labels)
    purity, error, auc = [], [], []
    c = choose_c(features[splits[0][0]], labels[splits[0][0]])
    for tr, te in splits:
        purity.append(knn_purity(features[tr], labels[tr], features[te], labels[te], k))
        e, a = probe_scores(features[tr], labels[tr], features[te], labels[te], c)
        error.append(e)
        auc.append(np.nan if a is None else a)
    out = {"knn_purity": mean_se(purity), "probe_error": mean_se(error)}
    if len(np.unique(labels)) == 2:
        out["probe_auc"] = mean_se(auc)
    return out


def r2(truth: np.ndarray, prediction: np.ndarray) -> float:
    truth = np.asarray(truth, dtype=np.float64)
    resid = float(((truth - prediction) ** 2).sum())
    total = float(((truth - truth.mean()) ** 2).sum())
    return 1.0 - resid / total if total > 0 else float("nan")


def continuous_scores(features: np.ndarray, values, splits, k: int = K) -> dict:
    """k-NN regression R^2 and Spearman, ridge R^2 on standardised features, over ``splits``."""
    from scipy.stats import spearmanr
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    values = np.asarray(values, dtype=np.float64)
    knn_r2, ridge_r2, rho = [], [], []
    for tr, te in splits:
        predicted = values[tr][knn_indices(features[tr], features[te], k)].mean(axis=1)
        knn_r2.append(r2(values[te], predicted))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # a constant prediction has no rank correlation: NaN, dropped
            rho.append(float(spearmanr(predicted, values[te]).statistic))
        ridge = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 13)))
        ridge.fit(np.asarray(features[tr], dtype=np.float64), values[tr])
        ridge_r2.append(r2(values[te], ridge.predict(np.asarray(features[te], dtype=np.float64))))
    return {"knn_r2": mean_se(knn_r2), "ridge_r2": mean_se(ridge_r2), "knn_spearman": mean_se(rho)}


def usable_categorical(values) -> np.ndarray:
    """Row mask of labelled rows whose class has at least MIN_PER_CLASS members."""
    import pandas as pd

    s = pd.Series(values, dtype=object)
    known = s.notna().to_numpy()
    counts = s[known].astype(str).value_counts()
    keep = set(counts[counts >= MIN_PER_CLASS].index)
    return known & s.astype(str).isin(keep).to_numpy() if len(keep) >= 2 else np.zeros(len(s), bool)


def beats(a: dict, b: dict, higher_is_better: bool, n_se: float = 3.0) -> bool:
    """True when mean a is better than mean b by more than ``n_se`` of their combined standard error."""
    if a["mean"] is None or b["mean"] is None:
        return False
    se = float(np.hypot(a["se"] or 0.0, b["se"] or 0.0))
    diff = a["mean"] - b["mean"] if higher_is_better else b["mean"] - a["mean"]
    return bool(diff > n_se * se)


NOT_TASKS = {"sample", "split"}   # bookkeeping columns, not properties of the objects


def catalogue_tasks(catalog: pd.DataFrame, colour_by: dict) -> list[dict]:
    """Default tasks: every categorical / continuous colour column, and each vote fraction as a high-quality
    binary label (> 0.8 vs < 0.2, Hayat et al.). ``rows`` and ``labels`` are numpy arrays."""
    tasks = []
    for col, spec in colour_by.items():
        if col not in catalog.columns or col in NOT_TASKS:
            continue
        values = catalog[col]
        title = spec.get("title", col)
        if spec.get("kind") == "categorical":
            mask = usable_categorical(values.to_numpy())
            if mask.any():
                tasks.append({"name": col, "column": col, "title": title, "kind": "categorical",
                              "rows": np.flatnonzero(mask), "labels": values.astype(str).to_numpy()[mask]})
        elif spec.get("kind") == "fraction":
            v = pd.to_numeric(values, errors="coerce").to_numpy(float)
            confident = (v > 0.8) | (v < 0.2)
            if confident.sum() >= 40:
                tasks.append({"name": f"{col}>0.8", "column": col, "title": f"{title} > 0.8 vs < 0.2",
                              "kind": "categorical", "rows": np.flatnonzero(confident),
                              "labels": np.where(v[confident] > 0.8, "high", "low")})
        else:
            v = pd.to_numeric(values, errors="coerce").to_numpy(float)
            ok = np.isfinite(v)
            if ok.sum() < 40:
                continue
            log = bool((v[ok] > 0).all() and v[ok].max() > 30 * v[ok].min())
            tasks.append({"name": col, "column": col, "title": f"log10 {title}" if log else title,
                          "kind": "continuous", "rows": np.flatnonzero(ok),
                          "labels": np.log10(v[ok]) if log else v[ok]})
    return tasks


# ------------------------------------------------------------------------------ what "similar" means, per column
# Not properties of the objects: identifiers, positions, errors and raw vote counts (their fractions are the property)
NOT_PROPERTIES = re.compile(r"(^(object_id|ra|dec|umap_x|umap_y|row|index|file|path|source_file|sample|split)$)"
                            r"|(_err$)|(_count$)|(total_votes$)")
MAX_CATEGORIES = 30


def agreement_columns(catalog: pd.DataFrame) -> list[dict]:
    """Every catalogue column that says something about the objects, as {column, kind, log, rows, values}:
    categorical (2 to MAX_CATEGORIES distinct values: strings and booleans) or continuous (numbers; log10 when
    positive over more than a factor 30, as the report's tasks use them)."""
    out = []
    for col in catalog.columns:
        if NOT_PROPERTIES.search(str(col)):
            continue
        s = catalog[col]
        if pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s):
            known = s.notna().to_numpy()
            values = s.astype(str).to_numpy()
            if 2 <= len(pd.unique(values[known])) <= MAX_CATEGORIES and known.sum() >= 40:
                out.append({"column": str(col), "kind": "categorical", "log": False, "rows": np.flatnonzero(known),
                            "values": values[known]})
            continue
        v = pd.to_numeric(s, errors="coerce").to_numpy(float)
        ok = np.isfinite(v)
        if ok.sum() < 40 or len(np.unique(v[ok])) < 3:
            continue
        log = bool((v[ok] > 0).all() and v[ok].max() > 30 * v[ok].min())
        out.append({"column": str(col), "kind": "continuous", "log": log, "rows": np.flatnonzero(ok),
                    "values": np.log10(v[ok]) if log else v[ok]})
    return out


def neighbour_pairs(features: np.ndarray, k: int = K, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(neighbours, random): each row's k nearest other rows by cosine, and k random other rows, both (n, k)."""
    unit = l2_normalise(features)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    k = min(k, len(unit) - 1)
    neighbours = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    rng = np.random.default_rng(seed)
    random = rng.integers(0, len(unit) - 1, size=(len(unit), k))
    random += random >= np.arange(len(unit))[:, None]   # never the row itself
    return neighbours, random


def values_at(column: dict, position: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The column's values at ``position`` (sorted catalogue rows) -- category codes for categorical columns --
    and which of them are known."""
    local = np.searchsorted(position, column["rows"])
    inside = local < len(position)
    inside[inside] = position[local[inside]] == column["rows"][inside]
    values = column["values"][inside]
    if column["kind"] == "categorical":
        values = pd.factorize(values)[0]
    out = np.zeros(len(position))
    known = np.zeros(len(position), bool)
    out[local[inside]], known[local[inside]] = values, True
    return out, known


def pair_difference(kind: str, value: np.ndarray, known: np.ndarray, pairs: np.ndarray,
                    statistic=np.median) -> float | None:
    """Categorical: the share of (object, partner) pairs with the same value; continuous: the ``statistic`` of the
    absolute difference between an object's value and its partner's. Over pairs where both values are known;
    ``pairs`` holds each row's partners (n, k)."""
    a = np.repeat(np.arange(len(value)), pairs.shape[1])
    b = pairs.ravel()
    both = known[a] & known[b]
    if both.sum() < 20:
        return None
    if kind == "categorical":
        return float((value[a[both]] == value[b[both]]).mean())
    return float(statistic(np.abs(value[a[both]] - value[b[both]])))


def agreement_score(kind: str, near: float | None, random: float | None) -> float | None:
    """0 when neighbours agree no better than random pairs, 1 when they always agree, from ``pair_difference``:
    categorical (p_neighbours - p_random) / (1 - p_random); continuous 1 - d_neighbours / d_random, where d is the
    mean difference of the values' ranks (so that a column full of zeros or with a long tail is judged like any
    other)."""
    if near is None or random is None:
        return None
    if kind == "categorical":
        return float((near - random) / (1 - random)) if random < 1 else None
    return float(1 - near / random) if random > 0 else None


def neighbour_agreement(features: dict[str, np.ndarray], position: np.ndarray, columns: list[dict],
                        k: int = K, seed: int = 0) -> list[dict]:
    """For each column and feature source: how well an object's k nearest neighbours agree with it, beside random
    pairs of the same objects (``pair_difference``, ``agreement_score``)."""
    from scipy.stats import rankdata

    pairs = {name: neighbour_pairs(f, k, seed) for name, f in features.items()}
    out = []
    for col in columns:
        kind = col["kind"]
        value, known = values_at(col, position)
        # continuous columns are judged by their ranks, computed once per column
        ranks = None if kind == "categorical" else \
            np.where(known, rankdata(np.where(known, value, np.inf)) / max(1, known.sum()), 0.0)
        sources = {}
        for name, (near, random) in pairs.items():
            nb, rnd = (pair_difference(kind, value, known, p) for p in (near, random))
            by_rank = None if ranks is None else [pair_difference(kind, ranks, known, p, np.mean) for p in (near, random)]
            sources[name] = {"neighbours": nb, "random": rnd,
                             "agreement": agreement_score(kind, *(by_rank or (nb, rnd)))}
        if all(s["agreement"] is None for s in sources.values()):
            continue
        out.append({"column": col["column"], "kind": kind, "log": col["log"], "sources": sources})
    return out


# the simulated optical surveys' galaxy types (precompute/simulators: SDSS and its grz twin) on GZ's first question
SMOOTH_TYPES, FEATURED_TYPES = ("smooth",), ("spiral", "barred_spiral", "edge_on_disk")


def galaxy_type_tasks(catalog: pd.DataFrame) -> list[dict]:
    """With simulator truth (``truth_type``): its galaxy type, and smooth vs featured (the question Galaxy Zoo asks
    first); none without it."""
    if "truth_type" not in catalog.columns:
        return []
    kind = catalog["truth_type"].astype(str)
    known = catalog["truth_type"].notna().to_numpy()
    use = (kind.isin(SMOOTH_TYPES) | kind.isin(FEATURED_TYPES)).to_numpy()
    return [{"name": "truth_type", "column": "truth_type", "title": "Galaxy type (simulator truth)",
             "kind": "categorical", "rows": np.flatnonzero(known), "labels": kind.to_numpy()[known]},
            {"name": "smooth_vs_featured", "column": "truth_type", "title": "Smooth vs featured (simulator truth)",
             "kind": "categorical", "rows": np.flatnonzero(use),
             "labels": np.where(kind.isin(FEATURED_TYPES).to_numpy()[use], "featured", "smooth")}]
