"""The colour-by rules shared by the explorer's map and the points format: which manifest ``colour_by`` columns
become colour choices (``ColourSpec``), their float32 values (numbers as they are, categories as codes, nulls NaN)
and their default range, slider bounds and null share (``column_stats``, computed in one place)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

DENSITY = "density"
DEFAULT_CLIP_PERCENTILES = (1.0, 99.0)


@dataclass(frozen=True)
class ColourSpec:
    """One colour-by choice as the manifest describes it."""

    column: str
    title: str
    kind: str  # "fraction" | "continuous" | "categorical" | "density"
    units: str = ""
    categories: tuple[str, ...] = field(default=())

    @property
    def label(self) -> str:
        return f"{self.title} [{self.units}]" if self.units else self.title

    @property
    def value_column(self) -> str:
        """Name of the float32 column the map aggregates (prefixed so it never clashes with catalogue names)."""
        return f"c__{self.column}"


def column_stats(values: np.ndarray, spec: ColourSpec) -> tuple[tuple[float, float], tuple[float, float], float]:
    """(default colour range, full bounds for the range slider, share of objects without a value) of one colour
    column: the numbers the legend, the slider and the points/ metadata all use."""
    clim = default_range(values, spec)
    return clim, (full_range(values) if spec.kind == "continuous" else clim), null_fraction(values)


def density_spec() -> ColourSpec:
    # Drawn as log10(count): one linear colour mapper serves every kind, and Bokeh cannot swap mapper types
    # (linear <-> eq_hist) on a live plot.
    return ColourSpec(column=DENSITY, title="Object density", kind=DENSITY, units="objects per pixel")


def specs_from_manifest(colour_by: dict, catalog: pd.DataFrame) -> dict[str, ColourSpec]:
    """The colour choices offered: density first, then every manifest ``colour_by`` column the catalogue holds."""
    specs = {DENSITY: density_spec()}
    for column, meta in colour_by.items():
        if column == DENSITY or column not in catalog.columns:
            continue
        kind = meta.get("kind", "continuous")
        cats = tuple(category_levels(catalog[column])) if kind == "categorical" else ()
        specs[column] = ColourSpec(column=column, title=meta.get("title", column), kind=kind,
                                   units=meta.get("units", "") or "", categories=cats)
    return specs


def category_levels(series: pd.Series) -> list[str]:
    """Sorted distinct non-null values, as strings (the code of a value is its position here)."""
    return sorted(pd.unique(series.dropna().astype(str)))


def colour_values(series: pd.Series, spec: ColourSpec) -> np.ndarray:
    """float32 values for the aggregator: numbers as they are, categories as codes; nulls are NaN."""
    if spec.kind == "categorical":
        codes = pd.Categorical(series.astype("string").astype(object).where(series.notna()),
                               categories=list(spec.categories)).codes
        out = codes.astype(np.float32)
        out[codes < 0] = np.nan
        return out
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float32, na_value=np.nan)


def default_range(values: np.ndarray, spec: ColourSpec,
                  percentiles: tuple[float, float] = DEFAULT_CLIP_PERCENTILES) -> tuple[float, float]:
    """Colour limits: 0-1 for fractions, code bins for categories, percentile clip for continuous columns."""
    if spec.kind == "fraction":
        return (0.0, 1.0)
    if spec.kind == "categorical":
        return (-0.5, max(len(spec.categories), 1) - 0.5)
    finite = values[np.isfinite(values)] if values is not None else np.zeros(0)
    if finite.size == 0:
        return (0.0, 1.0)
    lo, hi = np.percentile(finite, percentiles)
    if hi <= lo:
        hi = lo + 1.0
    return (float(lo), float(hi))


def full_range(values: np.ndarray) -> tuple[float, float]:
    """Min and max of the non-null values (the bounds of the range slider)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return (0.0, 1.0)
    lo, hi = float(finite.min()), float(finite.max())
    return (lo, hi if hi > lo else lo + 1.0)


def null_fraction(values: np.ndarray) -> float:
    return float(np.mean(~np.isfinite(values))) if len(values) else 0.0
