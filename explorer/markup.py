"""The one rule for text that becomes markup.

Every string that a bundle, a catalogue, an import or a visitor supplies (titles, units, column names, values,
report text, messages, file names, labels) reaches the page's HTML only through ``text`` or as an argument of
``html``, which escapes each argument; the page's own markup is the template. Strings that are already markup made
this way are ``Markup`` and pass unchanged, so nothing is escaped twice. Markdown panes hold no data: Markdown
would turn a name such as ``![x](http://elsewhere/)`` into a request, whatever its HTML escaping.
"""
from __future__ import annotations

import html as _html
import numbers


class Markup(str):
    """HTML this program wrote, with every piece of data in it escaped: placed in the page as it is."""


def text(value) -> Markup | numbers.Number:
    """``value`` as text safe inside HTML (element content or a quoted attribute). Numbers pass as numbers, so a
    template can still format them (``{n:,}``); markup made here passes unchanged."""
    if isinstance(value, Markup) or (isinstance(value, numbers.Number) and not isinstance(value, bool)):
        return value
    return Markup(_html.escape(str(value), quote=True))


def html(template: str, *args, **kwargs) -> Markup:
    """``template.format(*args, **kwargs)`` with every argument escaped by ``text``: the template is the page's own
    markup, the arguments are data."""
    return Markup(template.format(*(text(a) for a in args), **{k: text(v) for k, v in kwargs.items()}))
