"""Bulk `fetch`: resumable cache, per-object failure list, output readable by the survey readers. The network
fetch is replaced by a stand-in; nothing here touches the network."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from precompute.fetch import fetch_all
from core.surveys.base import get_survey
from core.surveys.services import FetchError


class FakeService:
    """Answers like ``online.fetch_cutout``; fails for chosen RAs; can be told to die after k calls."""

    def __init__(self, fail_ra=(), die_after=None):
        self.calls, self.fail_ra, self.die_after = [], set(fail_ra), die_after

    def __call__(self, survey, coord, size_pix, scale, timeout=20, retries=1):
        from core.surveys.online import target_wcs

        if self.die_after is not None and len(self.calls) >= self.die_after:
            raise KeyboardInterrupt
        self.calls.append(round(coord.ra.deg, 3))
        if round(coord.ra.deg, 3) in self.fail_ra:
            raise FetchError(f"FIRST cutout server timed out after {timeout} s")
        n_bands = 1 if survey == "first" else 5
        rng = np.random.default_rng(int(coord.ra.deg * 1000))
        image = rng.normal(0, 1e-4, (n_bands, size_pix, size_pix)).astype(np.float32)
        image[:, size_pix // 2, size_pix // 2] += 0.01
        return image, target_wcs(coord, size_pix, scale).to_header()


@pytest.fixture
def targets(tmp_path):
    df = pd.DataFrame({"ra": [150.0, 150.1, 150.2, 150.3, 150.4, 200.0], "dec": [2.0] * 5 + [95.0],
                       "fr_class": ["FRI", "FRII", "FRI", "FRII", "FRI", "FRI"]})
    df.to_csv(tmp_path / "targets.csv", index=False)
    return tmp_path / "targets.csv"


def test_fetch_resumes_and_lists_failures(tmp_path, targets):
    out = tmp_path / "fetched"
    with pytest.raises(KeyboardInterrupt):
        fetch_all("first", targets, out, progress=False, fetch=FakeService(die_after=2))
    assert len(list((out / "cutouts").glob("*.fits"))) == 2
    assert not list((out / "cutouts").glob("*.partial"))

    service = FakeService(fail_ra={150.3})
    summary = fetch_all("first", targets, out, progress=False, fetch=service)
    assert service.calls == [150.2, 150.3, 150.4]  # the two on disk are not fetched again
    assert summary["available"] == 4 and summary["already_on_disk"] == 2 and summary["failed"] == 2
    failures = pd.read_csv(out / "failures.csv")
    assert any("timed out" in r for r in failures["reason"]) and any("invalid position" in r for r in failures["reason"])

    cut = get_survey("first").read_local(out / "catalog.csv")
    assert cut.images.shape == (4, 1, 150, 150) and not cut.skipped
    assert cut.catalog["fr_class"].tolist() == ["FRI", "FRII", "FRI", "FRI"]

    again = FakeService()
    assert fetch_all("first", targets, out, progress=False, fetch=again)["fetched_now"] == 1 and again.calls == [150.3]


def test_fetch_sdss_packs_an_hdf5_for_build(tmp_path, targets):
    out = tmp_path / "sdss"
    fetch_all("sdss", targets, out, progress=False, fetch=FakeService(), limit=3)
    cut = get_survey("sdss").read_local(images=out / "images.h5")
    assert cut.images.shape == (3, 5, 107, 107) and cut.catalog["ra"].tolist() == [150.0, 150.1, 150.2]
