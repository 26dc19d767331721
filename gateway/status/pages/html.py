"""The pieces every status page is built of: the document with its navigation, style and
self-refresh, tables with captions and header scopes, figures, and the escaping of every
value placed in them."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from html import escape
from urllib.parse import quote

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "Cell",
    "clock",
    "e",
    "figure",
    "model_href",
    "number",
    "page",
    "percent",
    "rollout_href",
    "table",
]

Cell = str  # already escaped HTML

_STYLE = """
body{font-family:system-ui,sans-serif;margin:0 1.5rem 2rem;color:#1a1a1a;background:#fff}
header{display:flex;gap:1.5rem;align-items:baseline;border-bottom:1px solid #ccc;padding:.6rem 0}
header nav a{margin-right:1rem}
h1{font-size:1.4rem;margin:.8rem 0 .2rem}h2{font-size:1.15rem;margin:1.6rem 0 .4rem}
h3{font-size:1rem;margin:1.2rem 0 .3rem}
p.meta{color:#444;margin:.2rem 0 1rem}
p.error{background:#fde8e4;border-left:4px solid #D55E00;padding:.4rem .8rem}
p.note{color:#444;font-style:italic}
table{border-collapse:collapse;margin:.4rem 0 1rem;font-size:.9rem}
caption{text-align:left;font-weight:600;padding:.2rem 0}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f2f2f2}td.n{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#006b4f}.warn{color:#8a5a00}.alert,.failed{color:#a33a00;font-weight:600}
figure{margin:.6rem 0 1.2rem;overflow-x:auto}figcaption{font-size:.85rem;color:#444}
a{color:#0057a0}
"""
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
# Nothing runs, nothing is fetched: the one inline style is allowed by its digest, charts are
# inline SVG, and no other site may frame the page.
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src data:;"
    " frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def e(value: object) -> str:
    """Text for HTML: escaped, quotes included."""
    return escape(str(value), quote=True)


def model_href(model: str) -> str:
    return f"/status/models/{quote(model, safe='')}"


def rollout_href(model: str) -> str:
    return f"{model_href(model)}/rollout"


def number(value: float | int | None, spec: str = ".4g", suffix: str = "") -> Cell:
    """`value` formatted by `spec` ("d" rounds a float: counts of weighted rows are floats)."""
    if value is None:
        return "-"
    return e(f"{round(value) if spec == 'd' else value:{spec}}{suffix}")


def percent(share: float | None, spec: str = ".2f") -> Cell:
    """A share in [0, 1] as a percentage."""
    return "-" if share is None else e(f"{100.0 * share:{spec}}%")


def clock(epoch: float) -> str:
    """`2026-12-03 12:03:04 UTC`."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def table(
    caption: str, header: Sequence[str], rows: Iterable[Sequence[Cell]], numeric: Sequence[int] = ()
) -> str:
    """A table with a caption and column headers; `rows` are escaped cells; the columns at
    `numeric` are right-aligned."""
    head = "".join(f'<th scope="col">{e(h)}</th>' for h in header)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>"
            for i, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    if not body:
        body.append(f'<tr><td colspan="{len(header)}">none</td></tr>')
    return (
        f"<table><caption>{e(caption)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def figure(svg: str, caption: str) -> str:
    """An inline chart; its SVG carries its own title and description for screen readers."""
    return f"<figure>{svg}<figcaption>{e(caption)}</figcaption></figure>"


def page(
    title: str, body: str, refresh_seconds: float, crumbs: Sequence[tuple[str, str]] = ()
) -> bytes:
    """The whole document: `title` in the tab and as the heading, navigation (overview, then
    `crumbs` as (href, text)), and a refresh every `refresh_seconds`."""
    links = [("/status", "Overview"), *crumbs]
    nav = "".join(f'<a href="{e(href)}">{e(text)}</a>' for href, text in links)
    refresh = max(1, round(refresh_seconds))
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{refresh}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)} - onnxgate</title><style>{_STYLE}</style></head>"
        f'<body><header><strong>onnxgate</strong><nav aria-label="pages">{nav}</nav></header>'
        f"<main><h1>{e(title)}</h1>{body}</main></body></html>\n"
    ).encode()
