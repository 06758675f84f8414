"""Options and small steps shared by several commands."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import typer

from distillkit.cli.console import Output
from distillkit.config import Override, as_overrides, parse_overrides
from distillkit.data.split import SplitResult, check_no_empty_split, split_dataset, write_splits
from distillkit.errors import UsageError
from distillkit.inference.slicing import SliceSpec

JSON_OPTION = typer.Option(False, "--json", help="Print one JSON document on stdout (logs go to stderr).")
QUIET_OPTION = typer.Option(False, "--quiet", "-q", help="Print nothing but errors.")
# Model files are read as data under an allowlist of checkpoint classes (distillkit.safe_load); this lifts it.
TRUST_MODEL_FILE_OPTION = typer.Option(
    False,
    "--trust-model-file",
    help="Load model files that need classes beyond distillkit's checkpoint allowlist. Such a file can run "
    "code while it loads: only for files whose origin you trust.",
)
# Splitting options, the same for `validate --split` and `split` (same seed → same files).
SEED_OPTION = typer.Option(42, "--seed", help="Seed of the split: the same seed gives the same files.")
OUTPUT_DIR_OPTION = typer.Option(None, "--output-dir", help="Where split files go [default: the input's folder].")
NO_STRATIFY_OPTION = typer.Option(False, "--no-stratify", help="Split by plain seeded shuffling, not by class.")
DROP_INVALID_OPTION = typer.Option(
    False, "--drop-invalid", help="Leave unrepairable annotations out instead of failing (reported as warnings)."
)

# Sliced (tiled) inference, the same for `infer` and `evaluate -m` (so AP with slicing is measurable).
SLICE_OPTION = typer.Option(
    None, "--slice", help="Predict on overlapping tiles of this size, WxH or one number (e.g. 320x320), and merge."
)
SLICE_OVERLAP_OPTION = typer.Option(
    0.2, "--slice-overlap", min=0.0, max=0.95, help="--slice: fraction of a tile shared with its neighbour."
)
SLICE_FULL_OPTION = typer.Option(
    False, "--slice-full", help="--slice: also predict on the whole image and merge (for objects larger than a tile)."
)
SLICE_MERGE_OPTION = typer.Option(
    "nms", "--slice-merge", help="--slice: nms (IoU, keeps the best box) or nmm (greedy merging on IoS, as SAHI)."
)
SLICE_MATCH_OPTION = typer.Option(
    0.5, "--slice-match", min=0.01, max=1.0, help="--slice: overlap above which two boxes of a class are one object."
)


def slice_spec(tile: str | None, overlap: float, full_image: bool, merge: str, match: float) -> SliceSpec | None:
    """The ``SliceSpec`` of the --slice options; None without --slice (other --slice-* then are mistakes)."""
    if tile is None:
        if full_image or merge != "nms":
            raise UsageError("--slice-full and --slice-merge need --slice", "e.g. --slice 320x320")
        return None
    return SliceSpec.parse(tile, overlap=overlap, full_image=full_image, merge=merge, match_threshold=match)


def make_output(json_mode: bool, quiet: bool) -> Output:
    return Output(json_mode=json_mode, quiet=quiet)


def refuse_overwriting_input(target: Path, source: Path, option: str) -> None:
    if target.resolve() == source.resolve():
        raise UsageError(f"{option} {target} is the input file; inputs are never modified", f"choose another {option}")


def split_and_write(
    out: Output,
    dataset: dict[str, Any],
    source: Path,
    ratios: dict[str, float],
    seed: int,
    stratify: bool,
    min_per_class: int,
    output_dir: Path | None,
) -> tuple[SplitResult, dict[str, Path]]:
    """Split a validated dataset, write the split files, and show/return the summary."""
    check_no_empty_split(len(dataset.get("images") or []), ratios)  # an empty split file: refused, none written
    result = split_dataset(
        dataset, ratios, seed=seed, stratify=stratify, min_per_class=min_per_class, progress=out.progress()
    )
    folder = output_dir if output_dir is not None else source.resolve().parent
    paths = write_splits(result, folder, protect=[source])
    for warning in result.warnings:
        out.warning(warning["message"])
    return result, paths


def split_summary_with_paths(result: SplitResult, paths: dict[str, Path]) -> dict[str, Any]:
    summary = result.summary()
    for name, path in paths.items():
        summary["splits"][name]["path"] = str(path)
    return summary


def command_overrides(set_options: Sequence[str], options: Mapping[str, Any]) -> list[Override]:
    """The run's overrides: ``--set`` text parsed here, once, then the command's typed options (which win).

    Options left at None are not set; paths become absolute (valid again on ``--resume`` from elsewhere).
    """
    typed = {
        key: str(value.resolve()) if isinstance(value, Path) else value
        for key, value in options.items()
        if value is not None
    }
    return [*parse_overrides(set_options), *as_overrides(typed)]
