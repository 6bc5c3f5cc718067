"""Reading torch files that someone else made: tensors and plain containers only (``weights_only``), and no more
memory than the file itself holds.

``torch.save`` writes its zip entries stored, not compressed; a file re-zipped with deflate expands on loading (a
1.5 MB checkpoint of compressed zeros allocated 1.7 GB). The entries' declared sizes are read from the zip directory,
before torch reads a byte of them.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

MAX_EXPANSION = 2.0          # uncompressed entries over file size; torch's own files are ~1.0
SLACK_BYTES = 1 << 20


def expansion_problem(path: str | Path) -> str | None:
    """Why loading ``path`` would take far more memory than its size on disk, or None. Legacy (non-zip) torch
    files hold their tensors as they are and pass."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as z:
            unpacked = sum(max(0, info.file_size) for info in z.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        return f"is a damaged zip archive ({e})"
    size = path.stat().st_size
    if unpacked > MAX_EXPANSION * size + SLACK_BYTES:
        return (f"would expand from {size / 2**20:.1f} MB to {unpacked / 2**20:,.0f} MB when loaded (compressed "
                "entries, which torch.save never writes); save the weights again with torch.save")
    return None


def load_tensors(path: str | Path):
    """``torch.load(path, weights_only=True)`` on the CPU after the expansion check; ValueError naming the file."""
    import torch

    problem = expansion_problem(path)
    if problem:
        raise ValueError(f"{path} {problem}")
    return torch.load(path, map_location="cpu", weights_only=True)
