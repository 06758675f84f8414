"""Rich rendering of library results for people (the --json path never comes through here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from distillkit.cli.console import Output
from distillkit.data.validate import ValidationReport


def render_validation(out: Output, report: ValidationReport) -> None:
    info = report.info
    status = Text("valid", style="bold green") if report.valid else Text("INVALID", style="bold red")
    title = Text.assemble(status, "  ", (report.source or "dataset", "bold"))
    out.print(title)

    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="dim")
    summary.add_column()
    summary.add_row("images", f"{report.num_images} ({info.num_empty_images} without annotations)")
    summary.add_row("annotations", str(report.num_annotations))
    summary.add_row("classes", str(info.num_classes))
    boxes = _yes(info.has_boxes)
    if info.has_boxes and report.generated.get("bbox"):
        boxes += f", {report.generated['bbox']} derived from masks"
    summary.add_row("annotation mode", f"{info.mode} (boxes: {boxes}; masks: {_yes(info.has_masks)})")
    generated = ", ".join(f"{k} {v}" for k, v in report.generated.items() if v) or "nothing"
    replaced = ", ".join(f"{k} {v}" for k, v in report.replaced.items() if v) or "nothing"
    summary.add_row("generated", generated)
    summary.add_row("replaced", replaced)
    files = f"{report.images_found} found and checked" if report.images_checked else "not checked (none found)"
    summary.add_row("image files", files)
    out.print(summary)

    if info.categories:
        table = Table(title="class distribution", title_justify="left", show_edge=False)
        table.add_column("id", justify="right")
        table.add_column("class")
        table.add_column("annotations", justify="right")
        table.add_column("share", justify="right")
        table.add_column("images", justify="right")
        total = max(report.num_annotations, 1)
        for category in info.categories:
            style = "dim" if category.annotations == 0 else None
            table.add_row(
                str(category.id),
                category.name,
                str(category.annotations),
                f"{100 * category.annotations / total:.1f}%",
                str(category.images),
                style=style,
            )
        out.print(table)

    for issue in report.errors:
        out.print(Text.assemble(("error ", "bold red"), (f"[{issue.code}] ", "red"), issue.message))
    for issue in report.warnings:
        out.print(Text.assemble(("warning ", "yellow"), (f"[{issue.code}] ", "yellow"), issue.message))


def render_split_summary(out: Output, summary: dict[str, Any]) -> None:
    splits: dict[str, Any] = summary["splits"]
    names = list(splits)
    overview = Table(title="splits", title_justify="left", show_edge=False)
    overview.add_column("split")
    overview.add_column("images", justify="right")
    overview.add_column("annotations", justify="right")
    overview.add_column("empty images", justify="right")
    overview.add_column("file")
    for name in names:
        split = splits[name]
        overview.add_row(
            name,
            str(split["images"]),
            str(split["annotations"]),
            str(split["empty_images"]),
            display_path(split.get("path", "")),
        )
    out.print(overview)

    per_class = Table(title="images per class (share of the class)", title_justify="left", show_edge=False)
    per_class.add_column("class")
    for name in names:
        per_class.add_column(name, justify="right")
    categories = splits[names[0]]["categories"] if names else []
    for index, category in enumerate(categories):
        cells = []
        for name in names:
            entry = splits[name]["categories"][index]
            share = entry["image_share"]
            cells.append(f"{entry['images']} ({100 * share:.0f}%)" if share is not None else "0")
        per_class.add_row(category["name"], *cells)
    out.print(per_class)


def display_path(path: str) -> str:
    """Paths under the working folder are shown relative to it (shorter tables)."""
    if not path:
        return ""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return path


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"
