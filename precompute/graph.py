"""The pipeline's stage graph, declared once and importable without numpy or torch (``python -m precompute`` builds
its stage commands from it before importing anything heavy): each stage, the stages whose results it takes (in its
arguments' order), and what it does. ``precompute.stages`` gives each its function; the bundle stage takes them all.
"""
from __future__ import annotations

STAGE_GRAPH: dict[str, tuple[tuple[str, ...], str]] = {
    "ingest": ((), "read (or fetch) cutouts and the catalogue"),
    "train": (("ingest",), "train the self-supervised encoder"),
    "embed": (("ingest", "train"), "embed every cutout with a trained encoder"),
    "report": (("ingest", "train", "embed"), "what the embedding knows beside its untrained twin and the pixels"),
    "project": (("embed",), "PCA then UMAP to 2-D"),
    "stability": (("ingest", "train", "project", "report"), "rotated, shifted and noisy copies beside their "
                                                             "originals, in the embedding and in pixels"),
    "thumbnails": (("ingest",), "render and pack thumbnails"),
    "index": (("embed",), "build the similarity index"),
}
STAGE_INPUTS = {name: inputs for name, (inputs, _) in STAGE_GRAPH.items()}
STAGES = (*STAGE_GRAPH, "bundle")


def stages_for(until: str) -> list[str]:
    """``until`` and every stage it needs, in pipeline order."""
    if until == "bundle":
        return list(STAGE_GRAPH)
    needed, todo = set(), [until]
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            todo.extend(STAGE_INPUTS[name])
    return [name for name in STAGE_GRAPH if name in needed]
