"""``report.html``: ``report.md`` rendered by markdown-it-py (CommonMark with GitHub tables), its PNGs
embedded as base64 so the page is one self-contained file for a browser or a CI artifact viewer."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from markdown_it import MarkdownIt

STYLE = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
         "table{border-collapse:collapse;font-size:0.85em;margin:0.5em 0}th,td{border:1px solid #ccc;"
         "padding:2px 6px}th{background:#f3f3f3}img{max-width:100%}code{background:#f3f3f3;padding:0 3px}")


def _embed_images(tokens, folder: Path) -> None:
    """Point each image at its file's bytes as a data URI (an absent file gives an empty image)."""
    for token in tokens:
        for child in token.children or ():
            if child.type == "image":
                image = folder / str(child.attrGet("src"))
                data = base64.b64encode(image.read_bytes()).decode() if image.is_file() else ""
                child.attrSet("src", f"data:image/png;base64,{data}")


def write_html(markdown_path: Path) -> Path:
    """``report.html`` beside ``report.md``: the same content, self-contained."""
    markdown_path = Path(markdown_path)
    source = markdown_path.read_text(encoding="utf-8")
    renderer = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = renderer.parse(source)
    _embed_images(tokens, markdown_path.parent)
    body = renderer.renderer.render(tokens, renderer.options, {})
    title = next((line.lstrip("# ") for line in source.splitlines() if line.startswith("# ")), "UDC harness report")
    path = markdown_path.with_suffix(".html")
    path.write_text(f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
                    f"<style>{STYLE}</style></head><body>\n{body}</body></html>\n", encoding="utf-8")
    return path
