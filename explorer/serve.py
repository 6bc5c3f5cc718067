"""The ``panel serve`` command line of the explorer on this machine (localhost only), as the Makefile writes it:
its allowed origins, and ``explorer/visitors.py`` as the auth module (the Host check and each visitor's identity).
Tests and benchmarks start their servers with it, so they serve the page exactly as ``make demo`` does."""
from __future__ import annotations

import sys
from pathlib import Path

VISITORS_MODULE = Path(__file__).with_name("visitors.py")


def serve_command(bundle, port: int, *, app: str | Path = "explorer", args=(), serve_args=()) -> list[str]:
    """``panel serve APP`` on 127.0.0.1:``port`` over ``bundle``; ``args`` follow ``--args --bundle BUNDLE``,
    ``serve_args`` are panel serve options (e.g. ``--unused-session-lifetime 2000``)."""
    panel = Path(sys.executable).with_name("panel")
    return [str(panel), "serve", str(app), "--port", str(port), "--address", "127.0.0.1",
            "--allow-websocket-origin", f"127.0.0.1:{port}", "--allow-websocket-origin", f"localhost:{port}",
            "--auth-module", str(VISITORS_MODULE), *map(str, serve_args),
            "--args", "--bundle", str(bundle), *map(str, args)]
