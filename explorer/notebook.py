"""The explorer from Python, for notebooks: open a bundle, search it, read its labels, fit a probe, show the page.

    from explorer.notebook import open_bundle

    b = open_bundle("bundles/demo")
    b.similar("1237645876861797937", k=8)              # neighbours of an object, as a table
    b.similar_to_position("13:25:41.2 +23:22:53")      # the object at a sky position, then its neighbours
    b.similar_to_images(cutouts, k=8)                  # raw cutouts (N, C, H, W) embedded with the bundle's encoder
    b.labels()                                         # everyone's current labels
    fit = b.fit_probe("redshift"); fit.metrics; fit.predictions
    ft = b.fine_tune("fr_class", where=["confidence=confident"]); ft.table; ft.predictions
    b.show()                                           # the explorer itself, inline in JupyterLab

Every result is a pandas DataFrame with the object id, the cosine similarity, its rank among random pairs of the
bundle's objects, RA/Dec and the catalogue's columns, so it joins with whatever the notebook already holds.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from astropy import units as u
from astropy.coordinates import SkyCoord

from explorer.data import ExplorerData, load_explorer_data
from explorer.search.search import find_neighbours
from explorer.settings import Settings


@dataclass
class ProbeFit:
    """A linear probe fitted on the bundle's embeddings: its test metrics and its prediction for every object."""

    column: str
    method: str
    metrics: dict
    predictions: pd.Series   # indexed by object_id


@dataclass
class FineTuneFit:
    """A fine-tune beside its baselines: held-out error per method and number of labels (``table``: mean, se,
    n_seeds), every run (``runs``), and the fine-tuned classifier's prediction for every object (``predictions``:
    the predicted class and one probability column per class; None where the object had no cutout)."""

    target: str
    table: pd.DataFrame
    runs: pd.DataFrame
    predictions: pd.DataFrame | None
    model: object = None


class NotebookBundle:
    def __init__(self, data: ExplorerData, labels: str | Path | None = None):
        self.data = data
        self.settings = Settings(bundle=data.bundle.path, labels=Path(labels) if labels is not None else None)

    def __repr__(self) -> str:
        model = self.data.bundle.manifest.get("model", {})
        return (f"<bundle {self.data.bundle.path}: {self.data.n:,} {self.data.survey} objects, "
                f"{self.data.bundle.manifest.get('embedding_dim')}-d embedding from {model.get('method', '?')}>")

    @property
    def catalog(self) -> pd.DataFrame:
        return self.data.catalog

    def row_of(self, object_id) -> int:
        rows = self.data.row_index   # built once per bundle, shared with the labels
        if str(object_id) not in rows:
            raise KeyError(f"no object {object_id!r} in {self.data.bundle.path}")
        return int(rows.get_indexer([str(object_id)])[0])

    def _table(self, rows, cosines) -> pd.DataFrame:
        rows = np.asarray(rows, dtype=np.int64)
        cosines = np.asarray(cosines, dtype=np.float64)
        table = self.catalog.iloc[rows].reset_index(drop=True)
        table.insert(1, "cosine", cosines)
        table.insert(2, "closer_than_random_pairs_percent", self.data.similarity_percentile(cosines))
        return table

    def similar(self, object_id, k: int = 12, negatives=(), min_sep_arcsec: float = 3.0) -> pd.DataFrame:
        """The ``k`` objects most similar to ``object_id`` (more like it, less like each of ``negatives``)."""
        nb = find_neighbours(self.data.searcher, self.data.embedding_rows, self.data.ra, self.data.dec,
                             [self.row_of(object_id)], [self.row_of(n) for n in negatives], k=k,
                             min_sep_arcsec=min_sep_arcsec)
        return self._table(nb.ids, nb.similarities)

    def similar_to_position(self, where, k: int = 12, radius_arcsec: float = 3.0) -> pd.DataFrame:
        """``where``: a SkyCoord or any text the sky search takes (no name resolution here). The bundle's object
        within ``radius_arcsec`` is the query; off the catalogue, fetch or cut a cutout and use similar_to_images."""
        from explorer.sky.skyquery import parse_position

        if isinstance(where, SkyCoord):
            coord = where
        else:
            parsed = parse_position(str(where), resolve_names=False)
            if not parsed.ok:
                raise ValueError(parsed.message)
            coord = parsed.coord
        match = self.data.matcher.match(coord, radius=radius_arcsec * u.arcsec)
        if not match.matched:
            raise LookupError(match.message)
        return self.similar(self.data.object_ids[match.index], k=k)

    def similar_to_images(self, images: np.ndarray, k: int = 12) -> list[pd.DataFrame]:
        """Raw cutouts on the bundle's grid, (N, C, H, W) or one (C, H, W), in the survey's stored units: each is
        embedded with the bundle's encoder exactly as its images were, and searched."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 3:
            images = images[None]
        query = self.data.query_embedder(self.settings.cutout_cache)
        return [self._table(r.neighbour_ids, r.similarities) for r in (query.from_image(im, k=k) for im in images)]

    def labels(self) -> pd.DataFrame:
        """The current labels (after every add, remove and undo) from the bundle's label store."""
        from explorer.labels.labels_ui import store_for

        return store_for(self.data, self.settings).current()

    def fit_probe(self, column: str, method: str | None = None, n_train: int | None = None) -> ProbeFit:
        """A linear probe of ``column`` on the embeddings, trained on the bundle's train split, scored on its test
        split, and applied to every object."""
        from explorer.probes import probes

        target = probes.target_from_column(self.catalog, column, colour_by=self.data.bundle.colour_by)
        probe = probes.fit_probe(self.data.bundle.embeddings, target, self.data.split, method=method,
                                 n_train=n_train)
        pred = probes.score_all(probe, self.data.bundle.embeddings)
        return ProbeFit(column, probe.method, dict(probe.metrics),
                        pd.Series(pred.value, index=pd.Index(self.data.object_ids, name="object_id"), name=column))

    def label_efficiency(self, column: str, sizes=(50, 100, 200, 500, 1000, 2000, 5000),
                         method: str | None = None) -> pd.DataFrame:
        """The probe's test figures against the number of training labels (Hayat et al.'s label-efficiency curve):
        one row per size the train split can supply."""
        from explorer.probes import probes

        target = probes.target_from_column(self.catalog, column, colour_by=self.data.bundle.colour_by)
        return probes.label_efficiency(self.data.bundle.embeddings, target, self.data.split, sizes, method=method)

    def fine_tune(self, column: str | None = None, *, where=(), classes=None, labels: bool = False,
                  depth: int | None = None, epochs: int = 100, label_counts=(None,), seeds: int = 1,
                  methods=None, progress=None) -> "FineTuneFit":
        """Fine-tune the bundle's encoder on a class ``column`` (or, with ``labels=True``, on your labels), beside the
        same network from random weights and the linear probe, on the same objects and seeds (``core.finetune``;
        Slijepcevic et al. 2023's recipe, ``epochs`` scaled for a CPU). ``where``: "column=value" filters, e.g.
        ``("confidence=confident",)``; ``label_counts``: numbers of training labels (None: all) for the
        label-efficiency curve. The table has the held-out error per method and number of labels (± SE over seeds);
        the predictions come from the classifier fine-tuned on the most labels. Nothing is written into the bundle:
        ``python -m precompute finetune`` keeps a classifier there."""
        from core import finetune as ft
        from models.finetune import FineTuneConfig

        if labels:
            target = ft.labels_from_store(self.labels(), self.data.object_ids, classes)
        elif column is not None:
            target = ft.labels_from_column(self.catalog, column, list(where), classes)
        else:
            raise ValueError("give a class column, or labels=True for your labels")
        bundle = self.data.bundle
        images = ft.find_images(bundle)
        comparison, final = ft.compare(bundle, target, images, FineTuneConfig(epochs=epochs, depth=depth),
                                       counts=label_counts, seeds=range(seeds), methods=methods or ft.METHODS,
                                       progress=progress)
        predictions = None
        if final is not None:
            proba = ft.predict_all(final.model, bundle, images)
            predictions = pd.DataFrame(proba, columns=[f"p_{c}" for c in target.classes],
                                       index=pd.Index(self.data.object_ids, name="object_id"))
            known = np.isfinite(proba).all(axis=1)
            predictions.insert(0, "predicted", pd.Series(np.asarray(target.classes, dtype=object)[
                np.nan_to_num(proba).argmax(axis=1)], index=predictions.index).where(known, None))
        return FineTuneFit(target.name, comparison.table(), pd.DataFrame(comparison.rows), predictions,
                           None if final is None else final.model)

    def show(self):
        """The explorer page for this bundle, as a Panel object (displays inline in JupyterLab)."""
        import panel as pn

        from explorer.app import build_page

        pn.extension()
        return build_page(self.data, settings=self.settings)


def open_bundle(path: str | Path, labels: str | Path | None = None) -> NotebookBundle:
    """Open (and validate) a bundle for use from Python; ``labels``: another label store than the bundle's own."""
    return NotebookBundle(load_explorer_data(path), labels)
