"""Who may open the explorer, and who each visitor is: the hooks of ``panel serve --auth-module explorer/visitors.py``.

- The Host header must name one of the server's allowed origins (``--allow-websocket-origin``). A page reached under
  another name (DNS rebinding: a site whose name is made to resolve to 127.0.0.1) gets 403 for the page and for its
  websocket: Tornado passes a websocket whose Origin equals its Host, and a browser treats the rebound page as
  same-origin, so the Origin check alone cannot see it.
- Each browser gets a random visitor id in a cookie, and its labels are written under that identity (or the name
  the visitor types), not the server user's: "Undo my last" never reaches another visitor's work.
"""
from __future__ import annotations

import re
import secrets

VISITOR_COOKIE = "explorer_visitor"
_VISITOR_ID = re.compile(r"[0-9a-f]{16}")
login_url = "/"   # Bokeh requires one beside get_user; never used: a foreign Host is answered 403 by get_user itself


def get_user(handler) -> str:
    """The visitor of this request (page or websocket); 403 when its Host is not an allowed origin."""
    from bokeh.server.util import check_allowlist
    from tornado.web import HTTPError

    host = handler.request.headers.get("Host", "").lower()
    if not check_allowlist(host, handler.application.websocket_origins):
        raise HTTPError(403, reason="this server is not served under that host name")
    visitor = handler.get_cookie(VISITOR_COOKIE)
    if not (visitor and _VISITOR_ID.fullmatch(visitor)):
        visitor = secrets.token_hex(8)
        handler.set_cookie(VISITOR_COOKIE, visitor, httponly=True, samesite="Strict")
        handler.request.cookies.load(f"{VISITOR_COOKIE}={visitor}")   # the session this request makes sees it too
    return f"visitor-{visitor[:8]}"


def visitor_name(default: str) -> str:
    """This session's visitor identity ("visitor-3f9a2c1b") when the server gives one; ``default`` otherwise (a
    notebook, or a server started without the auth module)."""
    import panel as pn

    try:
        visitor = (pn.state.cookies or {}).get(VISITOR_COOKIE)
    except Exception:   # no session (a notebook, a test building the page directly)
        visitor = None
    return f"visitor-{visitor[:8]}" if visitor and _VISITOR_ID.fullmatch(visitor) else default
