"""The HTML cards of the page: the hover card, the selected object's details (position in both notations, archive
links, its catalogue row) and a neighbour card (thumbnail, rank among random pairs, cosine). Every value from a
catalogue or a manifest goes through ``explorer.markup``."""
from __future__ import annotations

import numpy as np

from explorer.data import ExplorerData
from explorer.links import archive_links, sky_position
from explorer.markup import html, text

THUMB_PX = 96
DETAIL_THUMB_PX = 160
KEY_COLUMNS = ("object_id", "redshift", "photo_z", "r_mag", "angular_extent_arcsec", "morph_class", "split")
HIDDEN_COLUMNS = {"umap_x", "umap_y", "ra", "dec"}


def format_value(v) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "—"
    try:
        import pandas as pd

        if pd.isna(v):
            return "—"
    except (TypeError, ValueError):
        pass
    if isinstance(v, (float, np.floating)):
        return f"{v:.4g}"
    return text(str(v))


def _units(data: ExplorerData, column: str) -> str:
    spec = data.specs.get(column)
    return html(" {}", spec.units) if spec is not None and spec.units else ""


def column_title(data: ExplorerData, column: str) -> str:
    """The manifest's title for a column (e.g. 'Spectroscopic redshift'), else its name with spaces."""
    spec = data.specs.get(column)
    return text(spec.title if spec is not None else str(column).replace("_", " "))


def _value_with_units(data: ExplorerData, value, column: str) -> str:
    text = format_value(value)
    if text == "—":
        return '<span class="muted" title="this catalogue has no value for this object">— (none)</span>'
    return text + _units(data, column)


def _object_id(row) -> str:
    """The id on one line: a 19-digit SDSS objID broken in two reads as two numbers."""
    return f'<span class="obj-id">{format_value(row["object_id"])}</span>'


def _rows_html(pairs) -> str:
    return "<table>" + "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in pairs) + "</table>"


def hover_card_html(data: ExplorerData, i: int | None) -> str:
    """The small card shown for the object under the pointer (empty hint over empty space)."""
    if i is None:
        return '<div class="obj-card muted">Point at an object to see it; click it to find similar ones.</div>'
    row = data.row(i)
    pos = sky_position(row["ra"], row["dec"])
    pairs = [("id", _object_id(row)), ("RA, Dec", f"{pos['ra_deg']}°, {pos['dec_deg']}°")]
    pairs += [(column_title(data, c), _value_with_units(data, row[c], c)) for c in KEY_COLUMNS[1:] if c in row.index]
    return (f'<div class="obj-card hover-card"><img src="{data.thumbnail_uri(i)}" width="{THUMB_PX + 32}" '
            f'height="{THUMB_PX + 32}" alt="thumbnail of {text(row["object_id"])}">'
            f'{_rows_html(pairs)}</div>')


# Column families of the catalogues the pipeline writes, folded under a title in the details (any other prefix
# shared by at least MIN_GROUP columns becomes a family named after it).
GROUP_TITLES = {"truth": "Simulation truth", "gz2": "Galaxy Zoo 2 votes", "gzd": "Galaxy Zoo DECaLS votes",
                "mirabest": "MiraBest", "first": "FIRST catalogue", "nvss": "NVSS"}
MIN_GROUP = 3


def detail_html(data: ExplorerData, i: int | None) -> str:
    """The selected object: large thumbnail, position in both notations, archive links, then its catalogue row: the
    bundle's colour-by columns by title (the survey's key columns) first, every other column in folded families."""
    if i is None:
        return '<div class="detail muted">Click an object on the map.</div>'
    row = data.row(i)
    pos = sky_position(row["ra"], row["dec"])
    links = " · ".join(html('<a href="{}" target="_blank" rel="noopener">{}</a>', url, label)
                       for label, url in archive_links(row["ra"], row["dec"], data.survey))
    pairs = [("Object id", _object_id(row)),
             ("RA", f"{pos['ra_hms']} ({pos['ra_deg']}°)"),
             ("Dec", f"{pos['dec_dms']} ({pos['dec_deg']}°)")]
    key = [c for c in data.specs if c in row.index and c not in HIDDEN_COLUMNS] + (["split"] if "split" in row else [])
    pairs += [(column_title(data, c), _value_with_units(data, row[c], c)) for c in key]
    rest = [c for c in row.index if c not in HIDDEN_COLUMNS and c != "object_id" and c not in key]
    folds = "".join(_fold_html(title, [(_short_name(c, prefix), format_value(row[c]) + _units(data, c))
                                       for c in columns])
                    for title, prefix, columns in column_groups(rest))
    return (f'<div class="detail"><img class="detail-thumb" src="{data.thumbnail_uri(i)}" '
            f'width="{DETAIL_THUMB_PX}" height="{DETAIL_THUMB_PX}" alt="selected object">'
            f'<p>{links}</p>{_rows_html(pairs)}{folds}</div>')


def column_groups(columns: list[str]) -> list[tuple[str, str, list[str]]]:
    """(title, prefix, columns) families: columns sharing a prefix (text before the first '_') with at least
    MIN_GROUP members, in first-seen order, then the rest as 'Other columns'."""
    by_prefix: dict[str, list[str]] = {}
    for c in columns:
        by_prefix.setdefault(str(c).split("_", 1)[0].lower(), []).append(c)
    groups, other = [], []
    for prefix, members in by_prefix.items():
        if len(members) >= MIN_GROUP:
            groups.append((GROUP_TITLES.get(prefix, prefix.replace("-", " ").capitalize()), prefix, members))
        else:
            other.extend(members)
    return groups + ([("Other columns", "", other)] if other else [])


def _short_name(column: str, prefix: str) -> str:
    """The column's name within its family, in words: 'truth_bulge_hlr_arcsec' -> 'bulge hlr arcsec'."""
    name = str(column)
    if prefix and name.lower().startswith(prefix + "_"):
        name = name[len(prefix) + 1:]
    return text(name.replace("_", " "))


def _fold_html(title: str, pairs) -> str:
    return (f'<details class="detail-group"><summary>{text(title)} <span class="muted">({len(pairs)})</span>'
            f"</summary>{_rows_html(pairs)}</details>")


def rank_text(percentile: float) -> str:
    """'top 0.3 %' for a score above 99.7 % of random pairs (never 'top 0 %': the reference resolves 0.01 %)."""
    top = max(100.0 - float(percentile), 0.01)
    return f"top {top:.2g} %" if top < 10 else f"top {top:.0f} %"


def neighbour_card_html(data: ExplorerData, rank: int, i: int, sim: float) -> str:
    row = data.row(i)
    pct = float(data.similarity_percentile(sim))
    title = (f"cosine {sim:.3f}: more similar than {pct:.2f} % of random pairs of objects in this bundle")
    return (f'<div class="nb-card"><img class="nb-thumb" src="{data.thumbnail_uri(i)}" width="{THUMB_PX}" '
            f'height="{THUMB_PX}" alt="neighbour {rank}"><div title="{text(title)}"><span class="nb-sim">'
            f'{rank_text(pct)}</span> · {sim:.3f}</div><div class="nb-id">{text(row["object_id"])}</div>'
            f'</div>')
