"""Reading a bundle (``Bundle``): arrays memory-mapped, the catalogue loaded once, everything checked first by
``core.validate``. The layout is in ``core.contract``."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from core.contract import read_catalogue
from core.validate import checked_bundle


class PackedThumbnails:
    """Random access to the packed thumbnails without loading the blob into memory."""

    def __init__(self, folder: Path):
        self.offsets = np.load(folder / "offsets.npy", mmap_mode="r")
        self._path = folder / "blob.bin"
        self._mm = np.memmap(self._path, dtype=np.uint8, mode="r") if self._path.stat().st_size else np.zeros(0, np.uint8)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> bytes:
        return self._mm[int(self.offsets[i]) : int(self.offsets[i + 1])].tobytes()


@dataclass
class Bundle:
    """A read-only view of a bundle. Arrays are memory-mapped; the catalogue is loaded once."""

    path: Path
    manifest: dict = field(repr=False)
    loaded_index: object = field(default=None, repr=False)   # the index validation already read, if any
    loaded_catalog: pd.DataFrame | None = field(default=None, repr=False)   # and the catalogue

    @classmethod
    def open(cls, path: str | Path, validate: bool = True, check_norms_rows: int = 100_000,
             hash_large_files: bool = True) -> "Bundle":
        """The bundle at ``path``, checked first (``checked_bundle``; options as ``validate_bundle``'s)."""
        path = Path(path)
        if not validate:
            return cls(path=path, manifest=json.loads((path / "manifest.json").read_text(encoding="utf-8")))
        manifest, index, catalog = checked_bundle(path, check_norms_rows, hash_large_files)
        return cls(path=path, manifest=manifest, loaded_index=index, loaded_catalog=catalog)

    @property
    def n(self) -> int:
        return int(self.manifest["n_objects"])

    @property
    def survey(self) -> str:
        return self.manifest.get("survey", "unknown")

    @cached_property
    def catalog(self) -> pd.DataFrame:
        if self.loaded_catalog is not None:
            return self.loaded_catalog
        return read_catalogue(self.path / "catalog.parquet")

    @cached_property
    def embeddings(self) -> np.ndarray:
        return np.load(self.path / "embeddings.npy", mmap_mode="r")

    @cached_property
    def thumbnails(self) -> PackedThumbnails:
        return PackedThumbnails(self.path / "thumbnails")

    @cached_property
    def index(self):
        if self.loaded_index is not None:   # validation read the whole index already: not twice
            return self.loaded_index
        import faiss

        return faiss.read_index(str(self.path / "index.faiss"))

    @property
    def colour_by(self) -> dict:
        return self.manifest.get("colour_by", {})

    @property
    def encoder_dir(self) -> Path:
        return self.path / "encoder"
