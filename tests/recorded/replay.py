"""A localhost HTTP server that replays recorded service answers, so tests run the real astroquery/astropy
request code with no network. Each route answers a fixed body (or a function of the query string) with a status
and an optional delay, and counts the requests it served.

    with ReplayServer() as srv:
        srv.route("POST", "/cgi-bin/firstcutout", body=fits_bytes, content_type="application/fits")
        url = srv.url("/cgi-bin/firstcutout")
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

HERE = Path(__file__).parent


def recorded(name: str) -> bytes:
    return (HERE / name).read_bytes()


class ReplayServer:
    def __init__(self):
        self.routes: dict[tuple[str, str], dict] = {}
        self.hits: Counter = Counter()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, method):
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode("latin-1")) if length else {}
                route = server.routes.get((method, url.path))
                server.hits[(method, url.path)] += 1
                if route is None:
                    self.send_error(404, "no recorded answer")
                    return
                if route["delay"]:
                    time.sleep(route["delay"])
                body = route["body"]
                if callable(body):
                    body = body({**parse_qs(url.query), **form})
                try:
                    self.send_response(route["status"])
                    self.send_header("Content-Type", route["content_type"])
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def do_GET(self):
                self._answer("GET")

            def do_POST(self):
                self._answer("POST")

            def log_message(self, *args):
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def route(self, method: str, path: str, body, status: int = 200, delay: float = 0.0,
              content_type: str = "application/octet-stream") -> None:
        self.routes[(method, path)] = dict(body=body, status=status, delay=delay, content_type=content_type)

    def url(self, path: str = "/") -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}{path}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._httpd.shutdown()
        self._httpd.server_close()


def skyview_routes(srv: ReplayServer, fits_body, fits_path: str = "/tempspace/fits/skv4242_1.fits") -> str:
    """Serve SkyView's three-step exchange (form page, query answer page, FITS link); return the form URL."""
    srv.route("GET", "/current/cgi/basicform.pl", recorded("skyview_basicform.html"), content_type="text/html")
    results = recorded("skyview_results.html").replace(b"{FITS_PATH}", fits_path.encode())
    srv.route("GET", "/current/cgi/runquery.pl", results, content_type="text/html")
    srv.route("GET", fits_path, fits_body, content_type="application/fits")
    return srv.url("/current/cgi/basicform.pl")
