"""The shared floor under ``precompute`` (writes bundles) and ``explorer`` (reads them); it imports neither.

It holds what both sides must agree on: the surveys (``core.surveys``: readers, normalisation, augmentation recipe,
thumbnails, colour-by columns, online services, archive links, defaults), the bundle contract (``contract``,
``bundle`` reader, ``validate``, ``write``, ``arrays``), similarity search (``index``), the points format
(``points``), the colour-by rules (``colour``), the encoder loader (``encoder``), map placement of new
objects (``placement``) and the figures of what an embedding knows (``knowledge``). docs/ARCHITECTURE.md draws the
layers.
"""
