"""Colour-by: turn a manifest's ``colour_by`` columns into float32 value columns, aggregators and colour scales.

Every colourable column becomes one float32 array (nulls stay NaN) so the map can recolour by swapping the
Datashader aggregator, never by rebuilding the plot (docs/ARCHITECTURE.md, "Measured choices"):

- fraction    -> ``ds.mean`` on a fixed 0-1 scale
- continuous  -> ``ds.mean`` on a percentile-clipped (or user-set) range, with units on the colour bar
- categorical -> ``ds.max`` on integer codes (0..n-1), a discrete palette and a legend
- density     -> ``ds.count``

Objects whose value is null are drawn by a grey density layer underneath, so they never disappear.
"""
from __future__ import annotations


from dataclasses import dataclass

import colorcet
import datashader as ds
import numpy as np

# the shared rules, re-exported: the explorer reads every colour rule through this module
from explorer.markup import text
from core.colour import (DENSITY, ColourSpec, category_levels, colour_values, column_stats, default_range,  # noqa: F401
                         density_spec, full_range, null_fraction, specs_from_manifest)

NULL_GREY = "#b4b4b4"

_PALETTES = {
    # perceptually uniform, light -> dark reads as low -> high; the first 48 entries (near-white, invisible on the
    # white map) are dropped, so a fraction of 0 still shows
    "fraction": colorcet.CET_L17[48:],
    "continuous": colorcet.bmy,
    # density reads as ink on the white map: lone objects orange, crowded pixels dark red (the old dark-red-first
    # ramp drew every lone object almost black, so the crowded parts did not stand out)
    DENSITY: colorcet.fire[::-1][60:230],
}
def _saturated(hex_colour: str) -> bool:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return max(r, g, b) - min(r, g, b) > 40


# hex strings (the bare name holds RGB floats), without the greys: grey means "no value" on this map
CATEGORICAL_PALETTE = [c for c in colorcet.palette["glasbey_category10"] if _saturated(c)]


@dataclass(frozen=True, eq=False)
class ColourLayer:
    """A colour choice with what the map and legend need: the float32 values (None for density), default colour
    limits, the slider bounds and the share of objects without a value. The bundle's columns are shared by every
    session; a session adds its own (probe prediction, probe trust, user labels) as layers in its state."""

    spec: ColourSpec
    values: np.ndarray | None
    range: tuple[float, float]
    bounds: tuple[float, float]
    null_fraction: float = 0.0


def layer_from_values(column: str, title: str, kind: str, values: np.ndarray, units: str = "",
                      categories: tuple[str, ...] = ()) -> ColourLayer:
    """A per-session colour layer over float32 ``values`` (categorical: codes into ``categories``; NaN: no value)."""
    spec = ColourSpec(column=column, title=title, kind=kind, units=units, categories=tuple(categories))
    values = np.ascontiguousarray(values, dtype=np.float32)
    return ColourLayer(spec, values, *column_stats(values, spec))


def aggregator_for(spec: ColourSpec, column: str | None = None):
    """The Datashader reduction that draws ``spec`` (over ``column``, default the spec's own value column).

    The map aggregates a fixed column name ("v") holding the chosen values: Numba compiles one kernel per
    (reduction, column) pair, so a fixed name means recolouring never waits for a compile.
    """
    column = column or spec.value_column
    if spec.kind == DENSITY:
        return ds.count()
    if spec.kind == "categorical":
        return ds.max(column)
    return ds.mean(column)


def palette_for(spec: ColourSpec) -> list[str]:
    if spec.kind == "categorical":
        return list(CATEGORICAL_PALETTE[: max(1, len(spec.categories))])
    return list(_PALETTES.get(spec.kind, _PALETTES["continuous"]))


def _fmt(v: float, span: float = 0.0) -> str:
    """3 significant digits; a value within 0.1 % of the scale's span from zero is 0 (stars' redshifts of −3e-5
    made the redshift bar start at '-2.95e-05')."""
    return "0" if span > 0 and abs(v) < 1e-3 * span else f"{v:.3g}"


def density_ticks_html(peak: float) -> str:
    """Tick labels under the log-scaled density bar: 1 at the left, every power of ten up to the view's busiest
    pixel that has room, and that peak count at the right (the bar spans log10 1 .. log10 peak)."""
    top = max(float(np.log10(max(peak, 1.0))), np.log10(3.0))
    ticks = [(0.0, "1")] + [(d / top, f"{10 ** d:,}") for d in range(1, int(top) + 1) if d / top < 0.85]
    ticks.append((1.0, f"{max(int(round(peak)), 1):,}"))
    spans = "".join(f'<span style="position:absolute;left:{100 * x:.1f}%;transform:translateX(-{100 * x:.0f}%)">'
                    f'{label}</span>' for x, label in ticks)
    return (f'<div class="cb-ticks density-ticks" style="position:relative;height:1.3em">{spans}</div>'
            '<div class="cb-note">objects per screen pixel, log scale; zoom in to separate crowded ones</div>')


def legend_html(spec: ColourSpec, clim: tuple[float, float], null_frac: float = 0.0) -> str:
    """A colour bar (continuous / fraction / density) or swatch legend (categorical) with the title and units."""
    # every name here can come from a user (label names) or a shared catalogue: escape it (stored XSS otherwise)
    parts = [f'<div class="cb-legend"><div class="cb-title"><b>{text(str(spec.label))}</b></div>']
    pal = palette_for(spec)
    if spec.kind == "categorical":
        for name, colour in zip(spec.categories, pal):
            shown = text(str(name)) if str(name).strip() else "<span class='muted'>(blank in the catalogue)</span>"
            parts.append(f'<div class="cb-cat"><span class="cb-swatch" style="background:{text(colour)}">'
                         f'</span>{shown}</div>')
        parts.append('<div class="cb-note">where classes overlap, a pixel shows the one listed last</div>')
    else:
        stops = ", ".join(pal[:: max(1, len(pal) // 16)] + [pal[-1]])
        parts.append(f'<div class="cb-bar" style="background:linear-gradient(to right, {stops})"></div>')
        if spec.kind == DENSITY:
            parts.append(density_ticks_html(10 ** clim[1] if np.isfinite(clim[1]) else 1.0))
        else:
            span = abs(clim[1] - clim[0])
            parts.append(f'<div class="cb-ticks"><span>{_fmt(clim[0], span)}</span><span>{_fmt(clim[1], span)}</span>'
                         '</div>')
    if spec.kind != DENSITY:
        parts.append(f'<div class="cb-cat"><span class="cb-swatch" style="background:{NULL_GREY}"></span>'
                     f'no value ({null_frac:.0%} of objects)</div>')
    parts.append("</div>")
    return "".join(parts)
