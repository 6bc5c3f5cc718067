"""Simulated Galaxy Zoo 2 volunteers: the decision tree in Hart et al. (2016) naming, answered by 40-50 volunteers
per galaxy who see its features as clearly as its size and brightness allow."""
from __future__ import annotations

import numpy as np

# -- Galaxy Zoo 2 volunteers --------------------------------------------------------------------------------
# Tasks and answers in Hart et al. (2016) naming: task -> [answer column stems].
GZ2_TASKS = {
    "t01_smooth_or_features": ["a01_smooth", "a02_features_or_disk", "a03_star_or_artifact"],
    "t02_edgeon": ["a04_yes", "a05_no"],
    "t03_bar": ["a06_bar", "a07_no_bar"],
    "t04_spiral": ["a08_spiral", "a09_no_spiral"],
    "t05_bulge_prominence": ["a10_no_bulge", "a11_just_noticeable", "a12_obvious", "a13_dominant"],
    "t06_odd": ["a14_yes", "a15_no"],
    "t07_rounded": ["a16_completely_round", "a17_in_between", "a18_cigar_shaped"],
    "t10_arms_winding": ["a28_tight", "a29_medium", "a30_loose"],
    "t11_arms_number": ["a31_1", "a32_2", "a33_3", "a34_4", "a36_more_than_4", "a37_cant_tell"],
}
# How featured each type looks to a volunteer who sees it clearly.
_FEATUREDNESS = {"smooth": 0.04, "disk": 0.5, "spiral": 0.95, "barred_spiral": 0.97, "edge_on_disk": 0.92,
                 "irregular": 0.8, "merger": 0.75, "star": 0.05, "artefact": 0.2}
_ODDNESS = {"merger": 0.85, "irregular": 0.55, "artefact": 0.4}
VOLUNTEERS = (40, 50)


def gz2_columns() -> list[str]:
    cols = []
    for task, answers in GZ2_TASKS.items():
        for a in answers:
            cols += [f"{task}_{a}_count", f"{task}_{a}_fraction"]
    return cols


def visibility(p: dict) -> float:
    """0..1: how clearly a volunteer can see features: falls for small apparent size (relative to the seeing),
    faint surface brightness and, through both, redshift (GZ2's known redshift bias)."""
    r90 = p.get("petro_r90_arcsec", np.nan)
    r50 = p.get("r50_arcsec", np.nan)
    if not np.isfinite(r90) or not np.isfinite(r50):
        return 0.0
    size = 1.0 / (1.0 + (2.0 * p["seeing_fwhm_r_arcsec"] / r90) ** 3)
    mu50 = p["r_mag"] + 2.5 * np.log10(2 * np.pi * max(r50, 0.1) ** 2)
    surface = 1.0 / (1.0 + np.exp((mu50 - 22.8) / 0.6))
    return float(size * surface)


def _ask(rng, probs: np.ndarray, who: np.ndarray) -> np.ndarray:
    """Each volunteer in ``who`` picks one answer from their own probability row; returns answer index (-1 = not
    asked)."""
    out = np.full(len(who), -1)
    if who.any():
        p = probs[who]
        cum = np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)
        out[who] = (rng.uniform(size=(len(p), 1)) > cum).sum(axis=1).clip(0, p.shape[1] - 1)
    return out


def simulate_votes(p: dict, rng) -> dict:
    """Counts and fractions from 40–50 simulated volunteers walking the GZ2 decision tree.

    Each volunteer has a skill (how much of the visible truth they perceive); what they cannot see defaults to
    'smooth', 'no bar', 'no spiral', so fractions are soft, noisy and biased with redshift like the real ones."""
    gtype = p["type"]
    n = int(rng.integers(VOLUNTEERS[0], VOLUNTEERS[1] + 1))
    vis = visibility(p)
    skill = rng.beta(8, 2, n)
    seen = vis * (0.6 + 0.4 * skill)
    ones = np.ones(n, dtype=bool)
    ans = {}

    p_star = np.full(n, 0.9 if gtype == "star" else (0.6 if gtype == "artefact" else 0.01))
    p_feat = (seen * _FEATUREDNESS[gtype] + (1 - seen) * 0.12) * (1 - p_star)
    ans["t01_smooth_or_features"] = _ask(rng, np.stack([1 - p_star - p_feat, p_feat, p_star], 1), ones)
    features = ans["t01_smooth_or_features"] == 1
    smooth = ans["t01_smooth_or_features"] == 0

    incl = p.get("inclination_deg", np.nan)
    edge = 1 / (1 + np.exp(-(incl - 74.0) / 4.0)) if np.isfinite(incl) else (0.15 if gtype == "merger" else 0.05)
    p_edge = np.clip(skill * edge + (1 - skill) * 0.1, 0, 1)
    ans["t02_edgeon"] = _ask(rng, np.stack([p_edge, 1 - p_edge], 1), features)
    face = features & (ans["t02_edgeon"] == 1)

    bar_visible = seen * (np.cos(np.deg2rad(incl)) if np.isfinite(incl) else 1.0) ** 0.5
    p_bar = np.clip(bar_visible * (0.9 if p["bar"] else 0.03) + (1 - bar_visible) * 0.06, 0, 1)
    ans["t03_bar"] = _ask(rng, np.stack([p_bar, 1 - p_bar], 1), face)
    arms_truth = 0.7 + 0.3 * p.get("arm_strength", 0.0) / 0.6 if p["arm_count"] > 0 else (
        0.25 if gtype in ("irregular", "merger") else 0.05)
    p_spiral = np.clip(seen * arms_truth + (1 - seen) * 0.15, 0, 1)
    ans["t04_spiral"] = _ask(rng, np.stack([p_spiral, 1 - p_spiral], 1), face)
    spiral = face & (ans["t04_spiral"] == 0)

    _ask_about_arms(rng, p, seen, spiral, ans)

    bt = p["bulge_to_disk"] / (1 + p["bulge_to_disk"]) if np.isfinite(p["bulge_to_disk"]) else 0.5
    perceived_bt = (bt if np.isfinite(bt) else 1.0) * rng.lognormal(0, 0.5, n)
    bulge = np.stack([perceived_bt < 0.05, (perceived_bt >= 0.05) & (perceived_bt < 0.2),
                      (perceived_bt >= 0.2) & (perceived_bt < 0.5), perceived_bt >= 0.5], 1)
    ans["t05_bulge_prominence"] = _ask(rng, bulge.astype(float) + 1e-9, face)

    q = p["axis_ratio"] if np.isfinite(p["axis_ratio"]) else 0.9
    perceived_q = q + rng.normal(0, 0.08, n)
    round_ = np.stack([perceived_q > 0.8, (perceived_q > 0.45) & (perceived_q <= 0.8), perceived_q <= 0.45], 1)
    ans["t07_rounded"] = _ask(rng, round_.astype(float) + 1e-9, smooth)

    p_odd = np.full(n, _ODDNESS.get(gtype, 0.08)) * (0.4 + 0.6 * vis)
    ans["t06_odd"] = _ask(rng, np.stack([p_odd, 1 - p_odd], 1), smooth | features)

    return _vote_table(ans, n)


def _ask_about_arms(rng, p: dict, seen: np.ndarray, spiral: np.ndarray, ans: dict) -> None:
    """How tightly wound and how many arms, as the volunteers who called the galaxy spiral perceive them."""
    n = len(seen)
    pitch = p.get("arm_pitch_deg", np.nan)
    perceived_pitch = (pitch if np.isfinite(pitch) else 20.0) + rng.normal(0, 6.0, n) / np.maximum(seen, 0.2)
    wind = np.stack([perceived_pitch < 15, (perceived_pitch >= 15) & (perceived_pitch < 24), perceived_pitch >= 24], 1)
    ans["t10_arms_winding"] = _ask(rng, wind.astype(float) + 1e-9, spiral)
    m = p["arm_count"] if p["arm_count"] > 0 else 2
    perceived_m = np.clip(np.round(m + rng.normal(0, 0.5, n) / np.maximum(seen, 0.2)), 1, 5).astype(int)
    p_cant = np.clip(0.1 + 0.5 * (1 - seen), 0, 0.9)
    arm_probs = np.zeros((n, 6))
    arm_probs[np.arange(n), np.minimum(perceived_m, 5) - 1 + (perceived_m >= 5)] = 1 - p_cant
    arm_probs[:, 5] += p_cant
    ans["t11_arms_number"] = _ask(rng, arm_probs + 1e-9, spiral)


def _vote_table(ans: dict, n: int) -> dict:
    """Counts and fractions per task and answer, in Hart et al. (2016) naming."""
    row = {"total_classifications": n}
    total_votes = 0
    for task, answers in GZ2_TASKS.items():
        counts = np.bincount(ans[task][ans[task] >= 0], minlength=len(answers))
        asked = counts.sum()
        total_votes += int(asked)
        for a, c in zip(answers, counts):
            row[f"{task}_{a}_count"] = int(c)
            # Like the published table, a task nobody reached has fraction 0 (use the counts to tell).
            row[f"{task}_{a}_fraction"] = float(c / asked) if asked else 0.0
    row["total_votes"] = total_votes
    return row
