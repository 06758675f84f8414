"""Building an experiment's configuration from its three layers.

    shipped defaults  →  values read from the data  →  command-line overrides

1. every requested section starts from its shipped YAML (``defaults/<section>.yaml``);
2. with a dataset, a ``data`` section records what the data says (classes, class mapping, which
   teachers, which student);
3. ``--set`` overrides are applied (they may also adjust the ``data`` section, e.g.
   ``--set data.teachers=[grounding_dino]``);
4. settings left at ``null`` meaning "from the data" (``student.model``, ``classifier.num_classes``)
   are filled from the ``data`` section, so an explicit override always wins;
5. each section is validated by its schema; any problem becomes a one-line ConfigError.

The same inputs always give the same result, down to the bytes of ``to_yaml()``.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError

from distillkit import __version__
from distillkit.config.defaults import load_defaults
from distillkit.config.explain import suggest, unknown_section_error, validation_error_to_config_error
from distillkit.config.overrides import ConfigOverrides, Override, apply_override, as_overrides
from distillkit.config.schema import (
    ALL_SCHEMAS,
    DATA_SECTION,
    SECTIONS,
    AugmentationConfig,
    CheckpointingConfig,
    ClassifierConfig,
    DataSection,
    DistillationConfig,
    GroundingDinoLoraConfig,
    PreprocessingConfig,
    SamLoraConfig,
    SectionModel,
    StudentConfig,
    TrainingDynamicsConfig,
)
from distillkit.data.info import DatasetInfo
from distillkit.errors import ConfigError

#: Student chosen when the data has boxes only / has masks.
DETECTION_STUDENT = "yolov8s"
SEGMENTATION_STUDENT = "yolov8s-seg"

_M = TypeVar("_M", bound=SectionModel)
PathLike = str | os.PathLike[str]


# --------------------------------------------------------------------------------------------------
# the result


class _ConfigDumper(yaml.SafeDumper):
    """Block-style mappings, but short lists of scalars on one line (``mean: [0.485, 0.456, 0.406]``)."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(isinstance(item, (str, int, float, bool)) or item is None for item in data) and len(data) <= 16
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_ConfigDumper.add_representer(list, _represent_list)


@dataclass
class ExperimentConfig:
    """The validated configuration of one experiment: one schema model per section.

    Sections are reachable as attributes (``config.student.batch``), by name (``config["student"]``)
    and as plain data (``config.to_dict()``). Models validate assignments, so
    ``config.student.batch = 0`` is rejected just like ``--set student.batch=0``.
    """

    sections: dict[str, SectionModel]
    dataset_info: DatasetInfo | None = None
    dataset_path: Path | None = None
    overrides: tuple[str, ...] = field(default_factory=tuple)
    #: the dotted keys an override set (``classifier.loss``), so a command can tell a choice from a default
    overridden: frozenset[str] = field(default_factory=frozenset)

    def is_overridden(self, key: str) -> bool:
        """Whether ``key`` (``section.key``) was set by an override rather than by defaults or data."""
        return key in self.overridden

    # -- access -----------------------------------------------------------------------------------

    def __getitem__(self, name: str) -> SectionModel:
        try:
            return self.sections[name]
        except KeyError:
            raise self._missing(name) from None

    def __contains__(self, name: object) -> bool:
        return name in self.sections

    def __iter__(self) -> Iterator[str]:
        return iter(self.sections)

    @property
    def names(self) -> list[str]:
        """Section names in written order (``data`` first, then the shipped sections' order)."""
        return list(self.sections)

    def _missing(self, name: str) -> ConfigError:
        if name == DATA_SECTION:
            return ConfigError("this configuration has no 'data' section", "build it with a dataset")
        if name in SECTIONS:
            return ConfigError(
                f"config section '{name}' was not requested (this configuration has: {', '.join(self.names)})"
            )
        return unknown_section_error(name, list(ALL_SCHEMAS))

    def _typed(self, name: str, model: type[_M]) -> _M:
        section = self[name]
        assert isinstance(section, model)
        return section

    @property
    def data(self) -> DataSection:
        return self._typed(DATA_SECTION, DataSection)

    @property
    def preprocessing(self) -> PreprocessingConfig:
        return self._typed("preprocessing", PreprocessingConfig)

    @property
    def augmentation(self) -> AugmentationConfig:
        return self._typed("augmentation", AugmentationConfig)

    @property
    def training_dynamics(self) -> TrainingDynamicsConfig:
        return self._typed("training_dynamics", TrainingDynamicsConfig)

    @property
    def checkpointing(self) -> CheckpointingConfig:
        return self._typed("checkpointing", CheckpointingConfig)

    @property
    def teacher_grounding_dino_lora(self) -> GroundingDinoLoraConfig:
        return self._typed("teacher_grounding_dino_lora", GroundingDinoLoraConfig)

    @property
    def teacher_sam_lora(self) -> SamLoraConfig:
        return self._typed("teacher_sam_lora", SamLoraConfig)

    @property
    def student(self) -> StudentConfig:
        return self._typed("student", StudentConfig)

    @property
    def distillation(self) -> DistillationConfig:
        return self._typed("distillation", DistillationConfig)

    @property
    def classifier(self) -> ClassifierConfig:
        return self._typed("classifier", ClassifierConfig)

    # -- output -----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain data (dicts, lists, scalars), sections and keys in schema order."""
        return {name: model.model_dump(mode="python") for name, model in self.sections.items()}

    def command_line(self) -> str:
        """A ``distillkit config`` command line that reproduces this configuration."""
        words = ["distillkit", "config"]
        if set(self.sections) - {DATA_SECTION} != set(SECTIONS):
            for name in self.sections:
                if name != DATA_SECTION:
                    words += ["-s", name]
        if self.dataset_path is not None:
            words += ["--data", str(self.dataset_path)]
        for text in self.overrides:
            words += ["--set", text]
        return " ".join(shlex.quote(word) for word in words)

    def to_yaml(self, header: bool = True) -> str:
        """The configuration as YAML; ``header`` adds comment lines saying how it was made.

        Deterministic: the same configuration always gives the same text (no time stamps here;
        those belong in metadata.json).
        """
        body = yaml.dump(self.to_dict(), Dumper=_ConfigDumper, sort_keys=False, allow_unicode=True, width=100)
        if not header:
            return body
        layers = "shipped defaults"
        if DATA_SECTION in self.sections:
            layers += " -> data"
        if self.overrides:
            layers += " -> overrides"
        lines = [
            f"# distillkit {__version__} configuration ({layers})",
            f"# reproduce: {self.command_line()}",
        ]
        return "\n".join(lines) + "\n" + body


# --------------------------------------------------------------------------------------------------
# the data layer


def student_model_for(info: DatasetInfo) -> str | None:
    """The student the data calls for: masks → segmentation, boxes only → detection, else none."""
    if info.has_masks:
        return SEGMENTATION_STUDENT
    if info.has_boxes:
        return DETECTION_STUDENT
    return None


def data_section_from_info(info: DatasetInfo, dataset_path: PathLike | None = None) -> DataSection:
    """The ``data`` section: what the dataset says, in config form."""
    return DataSection(
        dataset=_path_text(dataset_path) if dataset_path is not None else None,
        num_classes=info.num_classes,
        class_names=list(info.class_names),
        class_mapping=dict(sorted(info.class_mapping.items())),
        has_boxes=info.has_boxes,
        has_masks=info.has_masks,
        teachers=list(info.teachers),
        student=student_model_for(info),
    )


def _path_text(path: PathLike) -> str:
    # Absolute (so later commands find it from any folder) but not symlink-resolved: the user's name.
    return Path(os.path.abspath(os.fspath(path))).as_posix()


def _fill_from_data(tree: dict[str, dict[str, Any]], data: DataSection) -> None:
    """Fill the settings whose ``null`` means "decided by the data"."""
    student = tree.get("student")
    if student is not None and student.get("model") is None and data.student is not None:
        student["model"] = data.student
    classifier = tree.get("classifier")
    if classifier is not None and classifier.get("num_classes") is None and data.num_classes > 0:
        classifier["num_classes"] = data.num_classes


def _check_against_data(sections: dict[str, SectionModel], data: DataSection) -> None:
    """Cross-section checks that need the data: prompts must name real classes."""
    gdino = sections.get("teacher_grounding_dino_lora")
    if isinstance(gdino, GroundingDinoLoraConfig):
        for name in gdino.prompts:
            if name not in data.class_names:
                close = suggest(name, data.class_names)
                hint = f"did you mean '{close}'?" if close else f"classes: {', '.join(data.class_names)}"
                raise ConfigError(
                    f"teacher_grounding_dino_lora.prompts names '{name}', which is not a class of the dataset",
                    hint,
                )


# --------------------------------------------------------------------------------------------------
# building


def _select_sections(sections: Sequence[str] | None, has_data: bool) -> list[str]:
    """Requested section names, checked, in canonical order (``data`` first when present)."""
    wanted = list(SECTIONS) if sections is None else list(sections)
    for name in wanted:
        if name not in ALL_SCHEMAS:
            raise unknown_section_error(name, list(ALL_SCHEMAS))
        if name == DATA_SECTION and not has_data:
            raise ConfigError(
                "the 'data' section is read from a dataset, and none was given",
                "pass --data ANNOTATIONS.json",
            )
    chosen = [name for name in SECTIONS if name in wanted]
    return ([DATA_SECTION] if has_data else []) + chosen


def _check_override_scope(override: Override, names: Sequence[str]) -> None:
    section = override.section
    if section in names:
        return
    if section == DATA_SECTION:
        raise ConfigError(
            f"cannot set '{override.key}': the 'data' section is read from a dataset, and none was given",
            "pass --data ANNOTATIONS.json",
        )
    if section in SECTIONS:
        raise ConfigError(
            f"cannot set '{override.key}': section '{section}' is not part of this configuration "
            f"(it has: {', '.join(names)})",
            f"add --section {section}",
        )
    close = suggest(section, list(ALL_SCHEMAS))
    if close is not None:
        rest = override.key[len(section) :]
        raise ConfigError(f"unknown config key '{override.key}' — did you mean '{close}{rest}'?")
    raise ConfigError(
        f"unknown config key '{override.key}': there is no section '{section}'",
        f"sections: {', '.join(ALL_SCHEMAS)}",
    )


def validate_section(name: str, values: dict[str, Any]) -> SectionModel:
    """Validate one section's values with its schema; problems become a one-line ConfigError."""
    model = ALL_SCHEMAS[name]
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise validation_error_to_config_error(exc, name, model, values, ALL_SCHEMAS) from None


def section_defaults(name: str) -> SectionModel:
    """One section at its shipped defaults, validated (handy in library code and tests)."""
    if name not in SECTIONS:
        raise unknown_section_error(name, list(SECTIONS))
    return validate_section(name, load_defaults(name))


def build_config(
    sections: Sequence[str] | None = None,
    dataset_info: DatasetInfo | None = None,
    dataset_path: PathLike | None = None,
    overrides: ConfigOverrides = (),
    saved: Sequence[Override] = (),
) -> ExperimentConfig:
    """Layer shipped defaults → data → overrides for ``sections`` (None: all) and validate them.

    ``dataset_info`` adds the ``data`` section and fills the data-decided settings;
    ``dataset_path`` is recorded in it. ``saved`` restores settings of a saved configuration
    (``section_overrides``, on ``--resume``) before ``overrides``: typed values by dotted key, parsed
    ``Override`` objects or ``section.key=value`` strings, applied in order. Raises ConfigError
    (exit code 2) naming the key for unknown sections or keys (with the nearest valid one) and for
    values of the wrong type, and UsageError for malformed override strings.
    """
    if isinstance(sections, str):  # a lone name, not a sequence of one-letter names
        sections = [sections]
    parsed = as_overrides(overrides)
    names = _select_sections(sections, has_data=dataset_info is not None)

    tree: dict[str, dict[str, Any]] = {}
    for name in names:
        if name == DATA_SECTION:
            assert dataset_info is not None
            tree[name] = data_section_from_info(dataset_info, dataset_path).model_dump(mode="python")
        else:
            tree[name] = load_defaults(name)

    for override in [*saved, *parsed]:
        _check_override_scope(override, names)
        apply_override(tree, override)

    data: DataSection | None = None
    if DATA_SECTION in tree:
        validated = validate_section(DATA_SECTION, tree[DATA_SECTION])
        assert isinstance(validated, DataSection)
        data = validated
        _fill_from_data(tree, data)

    models = {name: validate_section(name, tree[name]) for name in names}
    if data is not None:
        _check_against_data(models, data)

    return ExperimentConfig(
        sections=models,
        dataset_info=dataset_info,
        dataset_path=Path(_path_text(dataset_path)) if dataset_path is not None else None,
        overrides=tuple(override.text for override in [*saved, *parsed]),
        overridden=frozenset(override.key for override in parsed),
    )
