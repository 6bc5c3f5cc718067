"""Bounds on a FITS file's headers, checked on its raw bytes before astropy parses anything.

astropy parses every header card in Python and ``WCS`` evaluates a SIP distortion of order n with (n + 1)² terms per
pixel, so a 12 MB upload of 150,000 cards held a core for minutes and SIP order 6,000 for 99 s. A survey cutout has a
few hundred cards, two or three HDUs and SIP orders below 10; these caps refuse what no cutout needs.
"""
from __future__ import annotations

MAX_HEADER_CARDS = 2_000   # per HDU
MAX_HDUS = 16
MAX_DISTORTION_ORDER = 9   # SIP A/B/AP/BP_ORDER
CARD, BLOCK = 80, 2880
_ORDERS = {b"A_ORDER", b"B_ORDER", b"AP_ORDER", b"BP_ORDER"}
_SIZE_KEYS = {b"BITPIX", b"NAXIS", b"PCOUNT", b"GCOUNT"}


def check_fits_headers(content: bytes, name: str) -> None:
    """ValueError naming ``name`` when a header holds more than MAX_HEADER_CARDS cards, the file more than MAX_HDUS
    headers, or a WCS distortion order exceeds MAX_DISTORTION_ORDER. A truncated file passes (astropy says so)."""
    pos = 0
    for _ in range(MAX_HDUS):
        if pos >= len(content):
            return
        values, pos = _scan_header(content, pos, name)
        if pos < 0:
            return
        pos += _padded(_data_bytes(values))
    if pos < len(content):
        raise ValueError(f"{name} holds more than {MAX_HDUS} HDUs; upload a cutout, not an archive of them.")


def _scan_header(content: bytes, pos: int, name: str) -> tuple[dict, int]:
    """(the size and distortion keywords' values, the offset after the header's END block); offset -1 when the
    file ends first."""
    values, cards = {}, 0
    while pos + BLOCK <= len(content):
        block, pos = content[pos:pos + BLOCK], pos + BLOCK
        for i in range(0, BLOCK, CARD):
            card = block[i:i + CARD]
            key = card[:8].rstrip()
            if key == b"END":
                return values, pos
            cards += 1
            if cards > MAX_HEADER_CARDS:
                raise ValueError(f"{name} has a header of more than {MAX_HEADER_CARDS:,} cards; a cutout needs a "
                                 "few hundred.")
            if (key in _SIZE_KEYS or key.startswith(b"NAXIS") or key in _ORDERS) and card[8:10] == b"= ":
                values[key] = _int_value(card)
                if key in _ORDERS and abs(values[key]) > MAX_DISTORTION_ORDER:
                    raise ValueError(f"{name} asks for a WCS distortion of order {values[key]} "
                                     f"({key.decode()}); at most {MAX_DISTORTION_ORDER} is accepted.")
    return values, -1


def _int_value(card: bytes) -> int:
    text = card[10:].split(b"/", 1)[0].strip()
    try:
        return int(float(text))
    except ValueError:
        return 0


def _data_bytes(values: dict) -> int:
    naxis = max(0, values.get(b"NAXIS", 0))
    if naxis == 0:
        return 0
    n = 1
    for i in range(1, naxis + 1):
        n *= max(0, values.get(b"NAXIS%d" % i, 0))
    per_value = abs(values.get(b"BITPIX", 8)) // 8
    return per_value * max(1, values.get(b"GCOUNT", 1)) * (max(0, values.get(b"PCOUNT", 0)) + n)


def _padded(n: int) -> int:
    return -(-n // BLOCK) * BLOCK
