"""`distillkit train-teacher`: Grounding DINO and/or SAM LoRA teachers, as the data calls for."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from distillkit.cli.common import (
    JSON_OPTION,
    QUIET_OPTION,
    TRUST_MODEL_FILE_OPTION,
    command_overrides,
    make_output,
)
from distillkit.cli.render import display_path
from distillkit.safe_load import trust_model_files
from distillkit.teachers.pipeline import TEACHER_LABELS, train_teachers


def train_teacher(
    data: Path = typer.Option(..., "--data", "-d", help="Training set: a COCO annotation file."),
    val: Path = typer.Option(..., "--val", "-v", help="Validation set: a COCO annotation file (same categories)."),
    output: Path = typer.Option(..., "--output", "-o", help="Experiment folder (teachers go to OUTPUT/teachers/)."),
    dino_weights: str | None = typer.Option(
        None, "--dino-weights", help="Grounding DINO base weights: a local folder or a Hugging Face id."
    ),
    sam_weights: str | None = typer.Option(None, "--sam-weights", help="SAM base weights: a local folder or a hub id."),
    only: str | None = typer.Option(None, "--only", help="Train only this teacher: dino or sam."),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Epochs for each teacher [default: config]."),
    batch: int | None = typer.Option(
        None, "--batch", min=1, help="Images per batch for each teacher [default: config]."
    ),
    device: str | None = typer.Option(None, "--device", help="cpu, 0, cuda:0, ... [default: auto]."),
    images_dir: Path | None = typer.Option(
        None, "--images-dir", help="Folder holding the images [default: each JSON's folder and its images/]."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue interrupted runs in --output from last.pt."),
    merge: bool = typer.Option(False, "--merge", help="Also save each teacher with its adapters merged in (merged/)."),
    overrides: list[str] = typer.Option([], "--set", help="Config override section.key=value (repeatable)."),
    trust_model_file: bool = TRUST_MODEL_FILE_OPTION,
    json_mode: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Fine-tune the teachers with LoRA adapters: the data decides which.

    Boxes in the data → Grounding DINO (one prompt holding every class name, LoRA on the
    encoder/decoder attention, backbones frozen); masks → SAM (box prompts, LoRA on the mask
    decoder); both → both. Masks without boxes get their boxes from the masks when the data is
    validated, so masks-only data trains both (Grounding DINO on the derived boxes). The decision and
    the class names are written to OUTPUT/teacher_config.yaml (with metadata.json) before training.

    Weights come from a local folder (what save_pretrained writes), else the Hugging Face cache
    (HF_HOME, HF_HUB_OFFLINE honoured), else a download when online. OUTPUT/teachers/
    grounding_dino_lora/ and sam_lora/ receive adapter_config.json + adapter_model.safetensors,
    metrics.csv, tensorboard/ and checkpoints/{last,best}.pt (--resume continues from last.pt);
    --merge adds merged/. Runs unchanged under `torchrun --nproc_per_node N`.

    Examples:

        distillkit train-teacher --data data/train.json --val data/val.json --output exp/run1

        distillkit train-teacher -d train.json -v val.json -o exp/run1 --dino-weights /models/gdino-tiny --epochs 20

        distillkit train-teacher -d train.json -v val.json -o exp/run1 --only sam --set teacher_sam_lora.lora.r=4

        torchrun --nproc_per_node 4 -m distillkit train-teacher -d train.json -v val.json -o exp/run1
    """
    trust_model_files(trust_model_file)  # before anything reads a model file
    from distillkit.training import is_main_process

    out = make_output(json_mode, quiet or not is_main_process())
    settings = command_overrides(
        overrides,
        {
            "teacher_grounding_dino_lora.weights": _weights_text(dino_weights),
            "teacher_sam_lora.weights": _weights_text(sam_weights),
            "teacher_grounding_dino_lora.epochs": epochs,
            "teacher_sam_lora.epochs": epochs,
            "teacher_grounding_dino_lora.batch_size": batch,
            "teacher_sam_lora.batch_size": batch,
        },
    )
    result = train_teachers(
        data,
        val,
        output,
        overrides=settings,
        only=only,  # type: ignore[arg-type]  # checked by the library: one-line error naming --only
        resume=resume,
        merge=merge,
        device=device,
        images_dir=images_dir,
        progress=out.progress(),
    )
    if not is_main_process():
        return
    if json_mode:
        out.emit_json(result.to_dict())
        return
    table = Table(
        title=f"teachers for {len(result.class_names)} classes: {', '.join(result.class_names)}",
        title_justify="left",
        show_edge=False,
    )
    for column in ("teacher", "trainable", "epochs", "best", "adapter"):
        table.add_column(column, justify="right" if column in ("trainable", "epochs") else "left")
    for trained in result.trained:
        best = (
            "-"
            if trained.best_value is None
            else f"{trained.monitor} {trained.best_value:.4f} (epoch {trained.best_epoch})"
        )
        epochs_text = f"{trained.epochs_run}" + (" (early stop)" if trained.stopped_early else "")
        table.add_row(
            TEACHER_LABELS.get(trained.name, trained.name),
            f"{trained.trainable_params:,} ({100 * trained.trainable_share:.2f}%)",
            epochs_text,
            best,
            display_path(str(trained.adapter_dir)),
        )
    out.print(table)
    for name, why in result.skipped.items():
        out.notice(f"{TEACHER_LABELS.get(name, name)} not trained ({why})")
    for trained in result.trained:
        if trained.merged_dir is not None:
            out.notice(
                f"merged {TEACHER_LABELS.get(trained.name, trained.name)}: {display_path(str(trained.merged_dir))}"
            )
    out.print(f"config: {display_path(str(result.config_path))}")


def _weights_text(value: object) -> str | None:
    # Local folders become absolute (valid from any working folder later); hub ids stay as they are.
    if value is None:
        return None
    if isinstance(value, str) and Path(value).expanduser().exists():
        return str(Path(value).expanduser().resolve())
    return str(value)
