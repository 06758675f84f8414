"""The experiment-run base: one folder, one run in it, fresh or resumed, configured in three layers.

A training command is a subclass that says what it reads (``inputs``), where its run keeps the
state a resume continues from (``previous_run``) and how it trains (``train``). The base owns the
rest, the same for students, classifiers and teachers:

- the output folder never lands on an input file or inside an input folder;
- one run per folder (a lock, taken before anything is read or written);
- fresh or ``--resume``: a folder that holds a run is never overwritten without ``--resume``,
  ``--resume`` of nothing is refused, a damaged checkpoint is named, a finished run is reported;
- the configuration: shipped defaults → what the data says → on resume the saved sections the
  family restores → typed overrides, built once (``configure``) and written with ``metadata.json``
  before the work starts (``write_config``).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, TypeVar

from distillkit.config import (
    ConfigOverrides,
    ExperimentConfig,
    Override,
    as_overrides,
    build_config,
    load_experiment_config,
    section_overrides,
    write_experiment_config,
)
from distillkit.data.info import DatasetInfo
from distillkit.errors import DataError, UsageError
from distillkit.locking import output_lock
from distillkit.paths import check_output_outside_inputs
from distillkit.progress import NULL_PROGRESS, Progress

ResultT = TypeVar("ResultT")
PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class PreviousRun:
    """What the experiment folder already holds for this command, judged by the checkpoint a resume reads."""

    kind: Literal["missing", "resumable", "finished", "damaged"]
    checkpoint: Path
    problem: str = ""  # damaged: what is wrong with the checkpoint
    what: str = "a training run"  # how messages name it ("a SAM training run")
    run_dir: Path | None = None  # the folder to delete to start again (default: the checkpoint's)


class ExperimentRun(ABC, Generic[ResultT]):
    """One training command's run in one experiment folder; subclasses are the task families."""

    #: the configuration file written into the folder (``distillation_config.yaml``, ...)
    config_file: ClassVar[str]
    #: the config sections this command resolves and records
    sections: ClassVar[tuple[str, ...]]
    #: sections restored from the saved configuration on ``--resume`` (later overrides still win)
    resume_sections: ClassVar[tuple[str, ...]] = ()
    #: whether ``--resume`` with nothing to resume is refused (teachers: a teacher that never started starts fresh)
    resume_needs_state: ClassVar[bool] = True

    def __init__(
        self,
        output: PathLike,
        *,
        overrides: ConfigOverrides = (),
        resume: bool | PathLike = False,
        progress: Progress = NULL_PROGRESS,
    ) -> None:
        self.folder = Path(output)
        self.overrides = as_overrides(overrides)  # text parsed once, here or by the command line
        self.resume = resume  # True, or (classifiers) the checkpoint file to continue from
        self.progress = progress

    # -- what a family says about itself ----------------------------------------------------------

    @abstractmethod
    def inputs(self) -> Sequence[PathLike | None]:
        """Files and folders the command reads: the output must be none of them and lie in none."""

    @abstractmethod
    def previous_run(self) -> PreviousRun:
        """What the folder holds of an earlier run of this command."""

    @abstractmethod
    def train(self) -> ResultT:
        """The family's work, once the folder is known to be free (or resumable) and locked."""

    def finished_result(self, previous: PreviousRun) -> ResultT:
        """``--resume`` of a run that already ended; families that can tell say what it left."""
        raise UsageError(f"the run in {self.folder} already finished", "start a new run with another --output")

    # -- the shared flow --------------------------------------------------------------------------

    def run(self) -> ResultT:
        """Check the inputs, lock the folder, refuse or resume, then train."""
        check_output_outside_inputs(self.folder, self.inputs())
        with output_lock(self.folder):  # a second run into this folder is refused before anything is read
            previous = self.previous_run()
            self.check_previous(previous)
            if self.resume and previous.kind == "finished":
                return self.finished_result(previous)
            return self.train()

    def check_previous(self, previous: PreviousRun) -> None:
        """Refuse what would lose work or resume nothing; damaged checkpoints are named."""
        if self.resume is True and previous.kind == "missing" and self.resume_needs_state:
            raise UsageError(
                f"nothing to resume in {self.folder} (no {previous.checkpoint})", "start a new run without --resume"
            )
        if previous.kind == "damaged":  # e.g. written by a version without atomic checkpoints, or a failing disk
            raise DataError(
                f"{previous.checkpoint} is damaged ({previous.problem}), so the run in {self.folder} cannot be resumed",
                f"start it again: delete {previous.run_dir or previous.checkpoint.parent} and run the same command "
                "without --resume (or choose another --output)",
            )
        if not self.resume and previous.kind != "missing":
            raise UsageError(
                f"{self.folder} already holds {previous.what} ({previous.checkpoint})",
                "pass --resume to continue it, or choose another --output",
            )

    def configure(
        self,
        info: DatasetInfo | None,
        dataset_path: PathLike | None,
        last: ConfigOverrides = (),
    ) -> ExperimentConfig:
        """Shipped defaults → the data → saved sections (on resume) → the run's overrides → ``last``.

        ``last`` holds what the family's own arguments set (a teacher passed as an argument), which wins.
        """
        saved = self.saved_sections() if self.resume else []
        return build_config(
            list(self.sections),
            dataset_info=info,
            dataset_path=dataset_path,
            saved=saved,
            overrides=[*self.overrides, *as_overrides(last)],
        )

    def saved_sections(self) -> list[Override]:
        """The ``resume_sections`` of the configuration the interrupted run wrote, as typed overrides."""
        saved_file = self.folder / self.config_file
        if not self.resume_sections or not saved_file.is_file():
            return []
        saved = load_experiment_config(saved_file)
        return section_overrides(saved.to_dict(), [name for name in self.resume_sections if name in saved])

    def write_config(self, config: ExperimentConfig, dataset_path: PathLike | None = None, **extra: Any) -> Path:
        """Write the configuration and ``metadata.json`` (``extra`` under ``extra``), atomically."""
        self.folder.mkdir(parents=True, exist_ok=True)
        metadata: Mapping[str, Any] = {"resume": bool(self.resume), **extra}
        return write_experiment_config(
            self.folder, config, filename=self.config_file, dataset_path=dataset_path, extra_metadata=metadata
        )
