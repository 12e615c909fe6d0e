"""The data viewer: one self-contained HTML page for a table version (no network, no external script), and a
loopback server for it.

The page chooses its layout from the table's columns (:func:`page_kind`):

- ``synthesis`` (a ``verdict`` and ``raw_output``): every sample, filterable by filter verdict, the teacher's raw
  output shown on demand;
- ``influence`` (``influence`` and ``loss_after``): scores grouped by synthesis prompt, sortable by any column;
- ``pairs`` (``chosen`` and ``rejected``): each pair's chosen and rejected text side by side with both scores and
  the margin;
- ``dataset`` (``instruction``, ``response``, ``teacher_version``): the rows with their teacher_version and source
  run, filterable by teacher;
- ``table``: any other table, searchable.

Every page has a text search. Texts are inserted as text nodes, never as markup.
"""

from __future__ import annotations

import html
import json
import threading
from collections.abc import Mapping
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import polars as pl

KINDS = ("synthesis", "influence", "pairs", "dataset", "table")


def page_kind(table: pl.DataFrame) -> str:
    """The layout a table gets, from its columns (see the module docstring)."""
    columns = set(table.columns)
    if {"chosen", "rejected"} <= columns:
        return "pairs"
    if {"verdict", "raw_output"} <= columns:
        return "synthesis"
    if {"influence", "loss_after"} <= columns:
        return "influence"
    if {"instruction", "response", "teacher_version"} <= columns:
        return "dataset"
    return "table"


def _json_cell(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return json.dumps(value, default=str)


def _script_json(value: object) -> str:
    """JSON safe inside a ``<script>`` element: every ``<`` escaped, so no text can close it or open a comment."""
    return json.dumps(value).replace("<", "\\u003c")


def render_page(table: pl.DataFrame, title: str, details: Mapping[str, str], kind: str | None = None) -> str:
    """The page of ``table`` (``kind`` from :func:`page_kind` unless given); ``details`` (asset, data version,
    path, run...) are shown in its header, and a ``source_run`` detail fills the source run of dataset rows that
    have no ``source_run`` column."""
    kind = kind or page_kind(table)
    if kind not in KINDS:
        raise ValueError(f"unknown viewer page kind {kind!r}; choose one of {KINDS}")
    data = {
        "kind": kind, "columns": table.columns, "details": dict(details),
        "rows": [{k: _json_cell(v) for k, v in row.items()} for row in table.iter_rows(named=True)],
    }
    header = "".join(f"<div><b>{html.escape(k)}</b> {html.escape(str(v))}</div>" for k, v in details.items())
    return (PAGE.replace("__TITLE__", html.escape(title)).replace("__HEADER__", header)
            .replace("__DATA__", _script_json(data)))


def write_page(page: str, path: str | Path) -> Path:
    """Write the page to ``path`` (its folder created); return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page, encoding="utf-8")
    return target


def serve_folder(folder: Path, port: int = 0) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """Serve ``folder`` on 127.0.0.1 (``port`` 0: a free one) from a background thread; ``server.shutdown()``
    stops it."""
    handler = partial(_QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, name="viewer", daemon=True)
    thread.start()
    return server, thread


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """No request log on the terminal."""


PAGE = (Path(__file__).parent / "viewer.html").read_text(encoding="utf-8")
"""The page template (styles and script inline): ``__TITLE__``, ``__HEADER__`` and ``__DATA__`` are filled in."""
