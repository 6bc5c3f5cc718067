"""A small real FIRST bundle for the sky-query tests, built from shared/data/first_mirabest (read in place, never
copied into the repository): N real cutouts, a small untrained ResNet saved with ``models.io.save_encoder`` and
the FIRST survey's fitted preprocessing (so ``core.encoder.load_embedder`` embeds exactly as a pipeline
bundle does), and a 2-D PCA standing in for the UMAP map (without a minute of numba JIT in a test).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "first_mirabest"
ORIGINAL = "100_010.451-009.284_0.0529_0080.60"  # catalogue row 0; its SkyView original is in skyview_originals/


def real_data_present() -> bool:
    return (DATA / "catalog.csv").is_file() and (DATA / "skyview_originals" / f"{ORIGINAL}.fits").is_file()


def original_answer() -> bytes:
    """SkyView's untouched answer for catalogue row 0: what a FIRST cutout service returns for that position."""
    return (DATA / "skyview_originals" / f"{ORIGINAL}.fits").read_bytes()


def original_centre():
    from astropy.coordinates import SkyCoord
    from astropy.io import fits

    h = fits.Header.fromstring(original_answer()[: 2880 * 3], sep="")
    return SkyCoord(h["CRVAL1"], h["CRVAL2"], unit="deg", frame="fk5").icrs


def build_first_bundle(out: Path, n: int = 40, skip_first: bool = False, width: int = 16):
    """Write the bundle to ``out`` and return its path. ``skip_first`` leaves catalogue row 0 out (its position
    is then off-catalogue, for the fetch path)."""
    import torch
    from astropy.io import fits
    from sklearn.decomposition import PCA

    from models.encoders import build_encoder
    from models.io import save_encoder
    from core.write import assign_splits, write_bundle
    from core.encoder import load_embedder
    from core.surveys.first import FIRST

    torch.set_num_threads(1)
    out = Path(out)
    cat = pd.read_csv(DATA / "catalog.csv").head(n + int(skip_first)).iloc[int(skip_first):].reset_index(drop=True)
    images = np.stack([fits.getdata(DATA / f, ext=1).astype(np.float32)[None] for f in cat["file"]])
    work = out.parent / f".{out.name}-work"
    torch.manual_seed(0)
    config = {"arch": "small", "in_channels": 1, "stem": "standard", "width": width, "survey": "first",
              "bands": ["1.4GHz"], "cutout_size": 150, "preprocessing": FIRST().fit_preprocessing(images)}
    save_encoder(build_encoder("small", 1, width=width), config, work / "encoder")
    emb = load_embedder(work / "encoder")(images)
    x = emb.astype(np.float32)
    pca = PCA(min(8, len(x) - 1), random_state=0).fit(x)
    reducer = PCA(2, random_state=0).fit(pca.transform(x))
    xy = reducer.transform(pca.transform(x)).astype(np.float32)
    from PIL import Image
    import io

    survey = FIRST()
    thumbs = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(survey.thumbnail_rgb(img)).resize((64, 64)).save(buf, format="WEBP", quality=80)
        thumbs.append(buf.getvalue())
    catalog = pd.DataFrame({"object_id": [Path(f).name.split(".fits")[0] for f in cat["file"]],
                            "ra": cat["ra"].astype(float), "dec": cat["dec"].astype(float),
                            "umap_x": xy[:, 0], "umap_y": xy[:, 1], "split": assign_splits(len(cat)),
                            "fr_class": cat["fr_class"].astype(str)})
    manifest = {"survey": "first", "bands": ["1.4GHz"], "pixel_scale_arcsec": 1.8, "cutout_size": 150,
                "model": {"method": "none (test: untrained small ResNet)", "architecture": "small"},
                "colour_by": {"fr_class": {"title": "FR class", "kind": "categorical", "units": ""}},
                "source": {"test": "tests/recorded/first_bundle.py", "data": "shared/data/first_mirabest"}}
    return write_bundle(out, catalog=catalog, embeddings=emb, thumbnails=thumbs, manifest=manifest,
                        encoder_dir=work / "encoder")
