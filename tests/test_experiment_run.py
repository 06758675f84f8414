"""The experiment-run base every training command stands on, and typed overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from distillkit.config import as_overrides, build_config, section_overrides, typed_override
from distillkit.errors import DataError, UsageError
from distillkit.experiment import ExperimentRun, PreviousRun


class CountingRun(ExperimentRun[dict[str, Any]]):
    """A minimal family: one 'checkpoint' file, a config with the student section, a result dict."""

    config_file = "toy_config.yaml"
    sections = ("student", "augmentation")
    resume_sections = ("augmentation",)

    def __init__(self, output: Path, source: Path, state: str = "missing", **common: Any) -> None:
        super().__init__(output, **common)
        self.source, self.state = source, state

    def inputs(self) -> list[Path]:
        return [self.source]

    def previous_run(self) -> PreviousRun:
        return PreviousRun(self.state, self.folder / "last.pt", "truncated")  # type: ignore[arg-type]

    def finished_result(self, previous: PreviousRun) -> dict[str, Any]:
        return {"finished": True}

    def train(self) -> dict[str, Any]:
        config = self.configure(None, None)
        self.write_config(config, note="toy")
        return {"epochs": config.student.epochs, "mosaic": config.augmentation.mosaic, "config": config}


def test_fresh_run_writes_config_and_metadata(tmp_path: Path) -> None:
    source = tmp_path / "data.json"
    source.write_text("{}")
    result = CountingRun(tmp_path / "exp", source, overrides={"student.epochs": 3}).run()
    assert result["epochs"] == 3
    saved = yaml.safe_load((tmp_path / "exp" / "toy_config.yaml").read_text())
    assert saved["student"]["epochs"] == 3
    metadata = yaml.safe_load((tmp_path / "exp" / "metadata.json").read_text())
    assert metadata["extra"] == {"resume": False, "note": "toy"}


def test_refusals_name_the_problem(tmp_path: Path) -> None:
    source = tmp_path / "data.json"
    source.write_text("{}")
    with pytest.raises(UsageError, match="already holds a training run"):
        CountingRun(tmp_path / "a", source, state="resumable").run()
    with pytest.raises(UsageError, match="nothing to resume in"):
        CountingRun(tmp_path / "b", source, resume=True).run()
    with pytest.raises(DataError, match=r"last\.pt is damaged \(truncated\)"):
        CountingRun(tmp_path / "c", source, state="damaged", resume=True).run()
    assert CountingRun(tmp_path / "d", source, state="finished", resume=True).run() == {"finished": True}
    with pytest.raises(UsageError, match="--output"):  # the output may not be an input
        CountingRun(source, source).run()


def test_resume_restores_saved_sections_and_later_overrides_win(tmp_path: Path) -> None:
    source = tmp_path / "data.json"
    source.write_text("{}")
    folder = tmp_path / "exp"
    CountingRun(folder, source, overrides={"augmentation.mosaic": 0.25, "student.epochs": 7}).run()
    resumed = CountingRun(folder, source, state="resumable", resume=True).run()
    assert resumed["mosaic"] == pytest.approx(0.25)  # restored: a resumable section
    assert resumed["epochs"] != 7  # not restored: student is not a resume section
    again = CountingRun(folder, source, state="resumable", resume=True, overrides=["augmentation.mosaic=0.5"]).run()
    assert again["mosaic"] == pytest.approx(0.5)


def test_typed_overrides_parse_nothing_and_record_their_keys() -> None:
    path_like = "/data/a run: #1"  # as --set text this would be YAML, not one path
    config = build_config(["distillation"], overrides={"distillation.teacher_dir": path_like})
    assert config.distillation.teacher_dir == path_like
    assert config.is_overridden("distillation.teacher_dir") and not config.is_overridden("distillation.dis_weight")
    assert [o.key for o in as_overrides(["student.epochs=2", typed_override("student.batch", 4)])] == [
        "student.epochs",
        "student.batch",
    ]
    with pytest.raises(UsageError, match="does not name a section"):
        typed_override("epochs", 3)
    restored = section_overrides({"student": {"epochs": 9, "batch": 2}}, ["student", "missing"])
    assert {o.key: o.value for o in restored} == {"student.epochs": 9, "student.batch": 2}


class StartsFreshRun(CountingRun):
    resume_needs_state = False  # as train-teacher: --resume of a teacher that never started starts it


def test_a_family_may_resume_from_nothing(tmp_path: Path) -> None:
    source = tmp_path / "data.json"
    source.write_text("{}")
    result = StartsFreshRun(tmp_path / "exp", source, resume=True, overrides={"student.epochs": 2}).run()
    assert result["epochs"] == 2
    with pytest.raises(UsageError, match="nothing to resume"):
        CountingRun(tmp_path / "other", source, resume=True).run()
