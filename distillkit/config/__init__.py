"""Configuration: shipped defaults → values read from the data → command-line overrides.

Typical use in a command::

    config = build_config(["teacher_grounding_dino_lora", "training_dynamics", "checkpointing"],
                          dataset_info=info, dataset_path=train_json, overrides=sets)
    write_experiment_config(exp_dir, config, filename="teacher_config.yaml")
    config.teacher_grounding_dino_lora.lora.r  # typed access

Modules: ``schema`` (one pydantic model per section), ``defaults`` (the shipped YAML files),
``overrides`` (``--set`` parsing), ``build`` (layering and validation), ``experiment`` (writing the
config and metadata.json), ``explain`` (one-line error wording).
"""

from distillkit.config.build import (
    DETECTION_STUDENT,
    SEGMENTATION_STUDENT,
    ExperimentConfig,
    build_config,
    data_section_from_info,
    section_defaults,
    student_model_for,
    validate_section,
)
from distillkit.config.defaults import available_default_sections, defaults_dir, load_defaults
from distillkit.config.experiment import (
    METADATA_FILENAME,
    build_metadata,
    git_state,
    load_experiment_config,
    package_versions,
    write_experiment_config,
)
from distillkit.config.explain import describe_field, iter_fields, short_type, show_value
from distillkit.config.overrides import (
    ConfigOverrides,
    Override,
    apply_override,
    as_overrides,
    parse_override,
    parse_overrides,
    parse_value,
    section_overrides,
    typed_override,
)
from distillkit.config.schema import ALL_SCHEMAS, DATA_SECTION, SECTIONS, DataSection, SectionModel

__all__ = [
    "ALL_SCHEMAS",
    "DATA_SECTION",
    "DETECTION_STUDENT",
    "METADATA_FILENAME",
    "SECTIONS",
    "SEGMENTATION_STUDENT",
    "ConfigOverrides",
    "DataSection",
    "ExperimentConfig",
    "Override",
    "SectionModel",
    "apply_override",
    "as_overrides",
    "available_default_sections",
    "build_config",
    "build_metadata",
    "data_section_from_info",
    "defaults_dir",
    "describe_field",
    "git_state",
    "iter_fields",
    "load_defaults",
    "load_experiment_config",
    "package_versions",
    "parse_override",
    "parse_overrides",
    "parse_value",
    "section_defaults",
    "section_overrides",
    "short_type",
    "show_value",
    "student_model_for",
    "typed_override",
    "validate_section",
    "write_experiment_config",
]
