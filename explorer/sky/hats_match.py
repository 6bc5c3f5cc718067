"""Sky matching through LSDB for bundles that carry ``hats/`` and are larger than ``core.hats.LSDB_ABOVE``: the
same answers as ``CatalogueMatcher`` (tests/test_hats.py) without its KD-tree of every object's unit vector. A
position is answered by LSDB cone searches of growing radius, each reading only the HEALPix partitions it touches;
a position far outside the footprint falls back to the nearest of a spread subsample (its message says "far"
either way)."""
from __future__ import annotations

import astropy.units as u
import numpy as np
from astropy.coordinates import Angle, SkyCoord

from explorer.sky.skyquery import CatalogueMatcher, SkyPositions

MAX_CONE_DEG = 10.0


class HatsMatcher(SkyPositions, CatalogueMatcher):
    """``CatalogueMatcher`` whose ``nearest`` asks the bundle's HATS catalogue (``core.hats.open_hats``)."""

    def __init__(self, hats_catalog, ra_deg, dec_deg, object_ids=None, *, footprint_radius: Angle | None = None,
                 sample: int = 20_000):
        from scipy.spatial import cKDTree

        from explorer.sky.skyquery import _unit_vectors

        self.hats = hats_catalog
        self.ra, self.dec = np.asarray(ra_deg, dtype=np.float64), np.asarray(dec_deg, dtype=np.float64)
        if len(self.ra) == 0:
            raise ValueError("the catalogue is empty: there is nothing to match positions against")
        self.object_ids = None if object_ids is None else np.asarray(object_ids)
        self._sample = self.subsample(sample)
        self.tree = cKDTree(_unit_vectors(SkyCoord(self.ra[self._sample] * u.deg, self.dec[self._sample] * u.deg)))
        # the sample's spacing scaled to the whole catalogue's density (spacing ~ 1/sqrt(density))
        spacing = self._typical_spacing(len(self._sample), scale=np.sqrt(len(self._sample) / len(self.ra)))
        self.footprint_radius = footprint_radius if footprint_radius is not None else spacing * 5

    def nearest(self, coord: SkyCoord) -> tuple[int, Angle]:
        from core.hats import cone_rows

        radius = self.footprint_radius.to(u.arcsec)
        while radius <= MAX_CONE_DEG * u.deg:
            found = cone_rows(self.hats, coord.ra.deg, coord.dec.deg, radius.to_value(u.arcsec))
            if len(found):
                seps = SkyCoord(found["ra"].to_numpy() * u.deg, found["dec"].to_numpy() * u.deg).separation(coord)
                best = int(np.argmin(seps.deg))
                return int(found["row"].iloc[best]), Angle(seps[best])
            radius = radius * 8
        from explorer.sky.skyquery import _unit_vectors

        _, i = self.tree.query(_unit_vectors(coord.reshape((1,)))[0])
        row = int(self._sample[int(i)])
        return row, SkyCoord(self.ra[row] * u.deg, self.dec[row] * u.deg).separation(coord)
