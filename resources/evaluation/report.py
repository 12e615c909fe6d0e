"""Report engine: PNG plots (matplotlib, headless) and the markdown page that shows them."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import polars as pl
from upath import UPath

from resources.storage.tables import publish_bytes

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402 - the backend must be chosen first

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def figure_png(figure: plt.Figure) -> bytes:
    """The figure as PNG bytes (tight layout, 100 dpi); the figure is closed."""
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def histogram_png(series: Mapping[str, Sequence[float]], title: str, xlabel: str) -> bytes:
    """Overlaid histograms, one per labelled series (e.g. influence per round)."""
    figure, axes = plt.subplots(figsize=(6, 3.5))
    for label, values in series.items():
        axes.hist(list(values), bins=min(20, max(5, len(values))), alpha=0.6, label=f"{label} (n={len(values)})")
    axes.axvline(0.0, color="black", linewidth=0.8)
    axes.set(title=title, xlabel=xlabel, ylabel="count")
    axes.legend()
    return figure_png(figure)


def curve_png(history: Sequence[Mapping[str, float]], keys: Sequence[str], title: str) -> bytes:
    """Training curves: each of ``keys`` found in the log entries, against the logged step."""
    figure, axes = plt.subplots(figsize=(6, 3.5))
    for key in keys:
        points = [(i + 1, entry[key]) for i, entry in enumerate(history) if key in entry]
        if points:
            axes.plot(*zip(*points, strict=True), marker="o", markersize=3, label=key)
    axes.set(title=title, xlabel="logged step")
    axes.legend()
    return figure_png(figure)


def comparison_png(results: pl.DataFrame, title: str) -> bytes:
    """Held-out loss per dataset: each seed as a dot, the mean with a ± one standard deviation bar."""
    summary = results.group_by("dataset", maintain_order=True).agg(
        mean=pl.col("heldout_loss").mean(), std=pl.col("heldout_loss").std().fill_null(0.0)
    )
    figure, axes = plt.subplots(figsize=(6, 3.5))
    names = summary["dataset"].to_list()
    axes.bar(names, summary["mean"].to_list(), yerr=summary["std"].to_list(), capsize=6, alpha=0.5)
    for index, name in enumerate(names):
        losses = results.filter(pl.col("dataset") == name)["heldout_loss"].to_list()
        axes.scatter([index] * len(losses), losses, color="black", s=12, zorder=3)
    low = min(results["heldout_loss"].min(), *summary["mean"].to_list())
    high = max(results["heldout_loss"].max(), *summary["mean"].to_list())
    margin = max(high - low, 1e-3)
    axes.set_ylim(low - margin, high + margin)
    axes.set(title=title, ylabel="held-out loss (lower is better)")
    return figure_png(figure)


def embedded_image(name: str, png: bytes) -> str:
    """Markdown image with the PNG inline (shown as is in the Dagster UI's metadata panel)."""
    return f"![{name}](data:image/png;base64,{base64.b64encode(png).decode()})"


def markdown_table(table: pl.DataFrame) -> str:
    """A small table as markdown."""
    with pl.Config(tbl_formatting="MARKDOWN", tbl_hide_column_data_types=True, tbl_hide_dataframe_shape=True,
                   tbl_rows=-1, tbl_cols=-1, tbl_width_chars=10_000, fmt_str_lengths=80, float_precision=4):
        return str(table)


@dataclass(frozen=True)
class ReportPage:
    """A markdown page: text blocks, then one section per PNG plot."""

    blocks: list[str]
    plots: dict[str, bytes]

    def render(self, inline: bool) -> str:
        """The page; plots inline as data URIs (for the Dagster UI) or as links to files beside it."""
        images = [embedded_image(name, png) if inline else f"![{name}]({name})" for name, png in self.plots.items()]
        sections = [f"## {name}\n\n{image}" for name, image in zip(self.plots, images, strict=True)]
        return "\n\n".join([*self.blocks, *sections])

    def publish(self, folder: UPath | Path) -> dict[str, UPath]:
        """Write ``report.md`` and the PNGs into ``folder`` (each atomically); return file name -> path."""
        folder = UPath(folder)
        files = {name: publish_bytes(folder / name, png) for name, png in self.plots.items()}
        files["report.md"] = publish_bytes(folder / "report.md", self.render(inline=False).encode())
        return files
