"""The app's settings, parsed once from its own arguments and the environment (``create_page(argv)``) and handed to
every section through the session's state, never read again from ``sys.argv`` or ``os.environ``::

    panel serve explorer --args --bundle DIR [--compare DIR] [--map-engine memory|dask|auto] [--labels PATH]
                                [--dask-scheduler ADDRESS]

Each option falls back to an environment variable, then a default: ``EXPLORER_BUNDLE`` (``bundles/demo``),
``EXPLORER_MAP_ENGINE`` (``memory``), ``EXPLORER_LABELS`` (``<bundle>.labels.sqlite`` beside the bundle),
``DASK_SCHEDULER_ADDRESS`` (none: the Dask map engine runs on the server's own threads; a cluster's workers must
see the bundle's folder), ``SKYQUERY_CACHE_DIR`` (``~/.cache/sky-explorer/cutouts``, fetched cutouts), ``USER``
(the labels' default author, else ``anonymous``). The online services' addresses (``SKYQUERY_*_URL``, ``SKYQUERY_SESAME_URL``) are read at each
request, so a mirror can be swapped in a running server.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from core.cluster import scheduler_address
from core.contract import BundleError
from core.labels import default_labels_path

DEFAULT_BUNDLE = "bundles/demo"
MAP_ENGINES = ("memory", "dask", "auto")
BUNDLE_ENV, ENGINE_ENV, LABELS_ENV, CACHE_ENV = ("EXPLORER_BUNDLE", "EXPLORER_MAP_ENGINE", "EXPLORER_LABELS",
                                                 "SKYQUERY_CACHE_DIR")
DEFAULT_CUTOUT_CACHE = Path.home() / ".cache" / "sky-explorer" / "cutouts"


@dataclass(frozen=True)
class Settings:
    bundle: Path = Path(DEFAULT_BUNDLE)
    map_engine: str = "memory"          # unchecked as parsed: ``checked_map_engine`` says what is wrong
    compare: Path | None = None         # a second bundle of the same objects, shown beside the first
    labels: Path | None = None          # None: beside the bundle
    cutout_cache: Path = DEFAULT_CUTOUT_CACHE
    author: str = "anonymous"           # the labels' default author: $USER
    dask_scheduler: str | None = None   # the Dask map engine's dask.distributed scheduler; None: local threads

    @classmethod
    def parse(cls, argv: list[str] | None = None, environ: dict | None = None) -> "Settings":
        parser = argparse.ArgumentParser(add_help=False)
        for option in ("--bundle", "--compare", "--map-engine", "--labels", "--dask-scheduler"):
            parser.add_argument(option, default=None)
        args, _ = parser.parse_known_args(list(argv or []))
        env = os.environ if environ is None else environ
        return cls(bundle=Path(args.bundle or env.get(BUNDLE_ENV) or DEFAULT_BUNDLE),
                   map_engine=(args.map_engine or env.get(ENGINE_ENV) or "memory").strip().lower(),
                   compare=Path(args.compare) if args.compare else None,
                   labels=Path(args.labels or env[LABELS_ENV]) if args.labels or env.get(LABELS_ENV) else None,
                   cutout_cache=Path(env.get(CACHE_ENV) or DEFAULT_CUTOUT_CACHE).expanduser(),
                   author=env.get("USER") or "anonymous",
                   dask_scheduler=scheduler_address(args.dask_scheduler, env))

    def checked_map_engine(self) -> str:
        """The map engine, or a BundleError naming the choices (one of MAP_ENGINES; ``auto`` is not resolved)."""
        if self.map_engine not in MAP_ENGINES:
            raise BundleError(f"unknown map engine {self.map_engine!r} (from --map-engine or ${ENGINE_ENV}); "
                              f"choose one of {', '.join(MAP_ENGINES)}")
        return self.map_engine

    def labels_path(self, bundle_path: str | Path) -> Path:
        """Where this app keeps the user labels of the bundle at ``bundle_path``."""
        return self.labels if self.labels is not None else default_labels_path(bundle_path)
