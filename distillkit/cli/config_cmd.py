"""`distillkit config`: show, check and write the resolved configuration of an experiment."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from distillkit.cli.common import JSON_OPTION, QUIET_OPTION, make_output
from distillkit.cli.console import Output
from distillkit.config import (
    ALL_SCHEMAS,
    DATA_SECTION,
    METADATA_FILENAME,
    SECTIONS,
    ExperimentConfig,
    build_config,
    describe_field,
    iter_fields,
    load_defaults,
    parse_overrides,
    short_type,
    show_value,
    write_experiment_config,
)
from distillkit.config.explain import unknown_section_error
from distillkit.data.info import DatasetInfo
from distillkit.data.validate import load_valid_dataset
from distillkit.paths import check_output_outside_inputs, image_folders


def load_dataset_info(path: Path) -> DatasetInfo:
    """Classes, boxes/masks and counts of a COCO file, exactly as `distillkit validate` reports them."""
    return load_valid_dataset(path).info


def _key_rows(sections: list[str]) -> list[dict[str, Any]]:
    """One row per leaf key: section, dotted key, type, shipped default and description.

    Keys of the ``data`` section have no default: they are read from the dataset (``from_data``).
    """
    rows: list[dict[str, Any]] = []
    for section in sections:
        from_data = section == DATA_SECTION
        defaults: dict[str, Any] = {} if from_data else load_defaults(section)
        for key, field in iter_fields(ALL_SCHEMAS[section]):
            value: Any = defaults
            for part in key.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            rows.append(
                {
                    "section": section,
                    "key": key,
                    "type": short_type(field),
                    "expected": describe_field(field),
                    "default": value,
                    "from_data": from_data,
                    "description": field.description or "",
                }
            )
    return rows


def _show_key_tables(out: Output, rows: list[dict[str, Any]]) -> None:
    """One table per section: key (relative to the section), type, default, meaning."""
    for section in dict.fromkeys(row["section"] for row in rows):
        title = f"[bold]{section}[/bold]" + ("  (read from the data)" if section == DATA_SECTION else "")
        table = Table(title=title, title_justify="left", expand=False, pad_edge=False)
        table.add_column("key", style="cyan", no_wrap=True)
        table.add_column("type", overflow="fold", max_width=28)
        table.add_column("default", overflow="fold", max_width=30)
        table.add_column("description", overflow="fold", ratio=1)
        for row in rows:
            if row["section"] != section:
                continue
            default = "-" if row["from_data"] else show_value(row["default"], limit=60, quote_strings=False)
            table.add_row(Text(row["key"]), Text(row["type"]), Text(default), Text(row["description"]))
        out.print(table)
    out.print(Text("Set any key with --set SECTION.KEY=VALUE, e.g. --set student.batch=32", style="dim"))


def _requested_sections(names: list[str] | None) -> list[str] | None:
    if not names:
        return None
    for name in names:
        if name not in ALL_SCHEMAS:
            raise unknown_section_error(name, list(ALL_SCHEMAS))
    return names


def config(
    section: list[str] | None = typer.Option(
        None,
        "--section",
        "-s",
        help="Only this section (repeatable) [default: all]. See --list for the names.",
        show_default=False,
    ),
    data: Path | None = typer.Option(
        None,
        "--data",
        "-d",
        help="COCO annotation file: adds the 'data' section (classes, teachers, student) and fills "
        "the settings it decides.",
        show_default=False,
    ),
    set_: list[str] | None = typer.Option(
        None,
        "--set",
        metavar="SECTION.KEY=VALUE",
        help="Override one key, value parsed as YAML (repeatable; nested: teacher_sam_lora.lora.r=8).",
        show_default=False,
    ),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help=f"Experiment folder: write the configuration and {METADATA_FILENAME} there.",
        show_default=False,
    ),
    filename: str = typer.Option("config.yaml", "--filename", help="Name of the config file in --output."),
    list_keys: bool = typer.Option(False, "--list", help="List every key with its type, default and meaning instead."),
    json_mode: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Show the fully resolved configuration: shipped defaults → the data → your --set overrides.

    Prints YAML on stdout (or one JSON document with --json). Wrong keys and values fail with one
    line naming the key and the nearest valid one, exit code 2. With --output, writes the
    configuration and metadata.json (dataset hash, counts, library versions, git commit) into an
    experiment folder, exactly as the training commands do before they start.

    Examples:

        distillkit config --list

        distillkit config -s student -s distillation --data data/train.json

        distillkit config --data data/train.json --set student.batch=32 --set training_dynamics.lr=3e-4

        distillkit config --data data/train.json -o exp/run1 --json > resolved.json
    """
    out = make_output(json_mode, quiet)
    sections = _requested_sections(section)

    if list_keys:
        names = list(SECTIONS) if sections is None else [n for n in ALL_SCHEMAS if n in sections]
        if data is not None and DATA_SECTION not in names:
            names.insert(0, DATA_SECTION)
        rows = _key_rows(names)
        if json_mode:
            out.emit_json({"keys": rows})
        else:
            _show_key_tables(out, rows)
        return

    if output is not None and data is not None:  # `-o data --filename train.json` would overwrite the data
        for target in (output, output / filename, output / METADATA_FILENAME):
            check_output_outside_inputs(target, [data, *image_folders([data])])
    dataset_info = load_dataset_info(data) if data is not None else None
    resolved: ExperimentConfig = build_config(
        sections, dataset_info=dataset_info, dataset_path=data, overrides=parse_overrides(set_ or ())
    )

    if output is not None:
        config_path = write_experiment_config(output, resolved, filename=filename)
        metadata_path = config_path.parent / METADATA_FILENAME
        if json_mode:
            out.emit_json(resolved.to_dict())
            out.notice(f"wrote {config_path} and {metadata_path}")
        elif out.show_report:
            for path in (config_path, metadata_path):
                # soft_wrap: never break a path over lines, it must stay copy-pasteable.
                out.stdout.print(Text.assemble("Wrote ", (str(path), "bold")), soft_wrap=True)
        return

    if json_mode:
        out.emit_json(resolved.to_dict())
    elif out.show_report:
        # Plain write, not rich: the YAML must reach pipes and files byte for byte.
        sys.stdout.write(resolved.to_yaml())
        sys.stdout.flush()
