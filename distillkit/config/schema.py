"""Typed schema of every configuration section: one pydantic model per YAML file in ``defaults/``.

The shipped YAML files are the single source of the default *values*; the models here define the
*shape* (keys, types, ranges), so fields carry no defaults: a key missing from a defaults file is a
packaging bug, caught by the tests. Models are strict (``16`` is an int, ``"16"`` is not) because
values arrive already typed from YAML or from ``--set`` parsing, and forbid unknown keys so a typo
is an error instead of a silently ignored setting.

``SECTIONS`` maps each section name (the YAML file stem) to its model. ``DataSection`` is the
data-derived layer, built from a ``DatasetInfo`` rather than from a file.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from distillkit.augmentation.names import (
    CHARACTERISTICS,
    ENVIRONMENT_OPTIONS,
    INTENSITIES,
    Background,
    Camera,
    Characteristic,
    Distance,
    Intensity,
    Lighting,
    unknown_name_message,
)

# Reusable constrained types: they keep the field lines short and the error texts uniform.
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Probability = Annotated[float, Field(ge=0, le=1)]
UnitOpenFloat = Annotated[float, Field(ge=0, lt=1)]

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?|\d+(,\d+)*)$")


class SectionModel(BaseModel):
    """Base of every section: strict types, unknown keys rejected, assignments validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)


def _device_to_str(value: Any) -> Any:
    # `--set training_dynamics.device=0` arrives as the int 0; devices are names.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _check_device(value: str) -> str:
    if not _DEVICE.match(value):
        raise ValueError("expected auto, cpu, mps, cuda, cuda:N or GPU indices like 0,1")
    return value


def _check_regex(value: str | list[str]) -> str | list[str]:
    if isinstance(value, str):
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression ({exc})") from None
    elif not value:
        raise ValueError("expected a regex or a non-empty list of module names")
    return value


# --------------------------------------------------------------------------------------------------
# preprocessing


class PreprocessingConfig(SectionModel):
    """How images are resampled and normalised for the classifiers, and for teachers without stored preprocessing.

    Input sizes belong to each model (``student.imgsz``, ``classifier.imgsz``, the teachers' own
    sizes); YOLO students letterbox with grey 114 as ultralytics does (see ``REMOVED_KEYS``).
    """

    interpolation: Literal["nearest", "bilinear", "bicubic", "area", "lanczos"] = Field(description="resampling filter")
    mean: list[Annotated[float, Field(ge=0, le=1)]] = Field(
        min_length=1, max_length=4, description="per-channel mean of [0,1] pixels"
    )
    std: list[PositiveFloat] = Field(min_length=1, max_length=4, description="per-channel std")

    @model_validator(mode="after")
    def _same_channels(self) -> PreprocessingConfig:
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} channels but std has {len(self.std)}")
        return self


# --------------------------------------------------------------------------------------------------
# augmentation


def _known_names(kind: str, valid: tuple[str, ...]) -> Any:
    """A before-validator rejecting unknown names with the nearest valid one (a Literal error cannot suggest)."""

    def check(value: Any) -> Any:
        for name in value if isinstance(value, list) else [value]:
            if isinstance(name, str) and name not in valid:
                raise ValueError(unknown_name_message(kind, name, valid))
        return value

    return check


class EnvironmentConfig(SectionModel):
    """Where and how the images were taken; each non-neutral option adds plausible transforms."""

    lighting: Lighting = Field(description="stable | variable (brightness, colour temperature) | poor (dark, noisy)")
    camera: Camera = Field(description="fixed | moving (shifts, perspective, motion blur) | shaky (strong blur, tilt)")
    background: Background = Field(description="clean | busy (clutter patches, shadows) | changing (colour shifts)")
    distance: Distance = Field(description="fixed | variable (scale jitter) | close (zoom, defocus, lens distortion)")

    _lighting = field_validator("lighting", mode="before")(_known_names("lighting", ENVIRONMENT_OPTIONS["lighting"]))
    _camera = field_validator("camera", mode="before")(_known_names("camera", ENVIRONMENT_OPTIONS["camera"]))
    _background = field_validator("background", mode="before")(
        _known_names("background", ENVIRONMENT_OPTIONS["background"])
    )
    _distance = field_validator("distance", mode="before")(_known_names("distance", ENVIRONMENT_OPTIONS["distance"]))


class AugmentationConfig(SectionModel):
    """Augmentation described by what the objects and the setting are like (distillkit.augmentation)."""

    characteristics: list[Characteristic] = Field(description="what the objects are like (see the README table)")
    environment: EnvironmentConfig
    intensity: Intensity = Field(description="none (off) | low | medium | high: ranges and probabilities")
    seed: NonNegativeInt = Field(description="augmentation RNG seed")
    mosaic: Probability = Field(description="student: probability of 4-image mosaic")
    close_mosaic: NonNegativeInt = Field(description="student: no mosaic in the last N epochs")
    mixup: Probability = Field(description="student: probability of mixup")
    copy_paste: Probability = Field(description="student: probability of copy-paste (masks only)")
    copy_paste_rare_classes: bool = Field(description="student: paste rare classes more often")

    _characteristic_names = field_validator("characteristics", mode="before")(
        _known_names("characteristic", CHARACTERISTICS)
    )
    _intensity_name = field_validator("intensity", mode="before")(_known_names("intensity", INTENSITIES))

    @field_validator("characteristics")
    @classmethod
    def _once_each(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("an entry is listed twice")
        return value


# --------------------------------------------------------------------------------------------------
# training dynamics


class EmaConfig(SectionModel):
    """Exponential moving average of the weights."""

    enabled: bool = Field(description="evaluate and save the EMA weights")
    decay: Annotated[float, Field(gt=0, lt=1)] = Field(description="EMA decay per step")


class TrainingDynamicsConfig(SectionModel):
    """The shared training loop: optimiser, schedule, precision, clipping, EMA, stopping."""

    epochs: PositiveInt = Field(description="training epochs")
    batch_size: PositiveInt = Field(description="images per batch")
    optimizer: Literal["adamw", "sgd"] = Field(description="optimiser")
    lr: PositiveFloat = Field(description="peak learning rate")
    weight_decay: NonNegativeFloat = Field(description="decoupled weight decay")
    momentum: UnitOpenFloat = Field(description="sgd momentum / adamw beta1")
    scheduler: Literal["cosine", "onecycle", "linear", "constant"] = Field(description="lr schedule")
    min_lr_ratio: Probability = Field(description="final lr as a fraction of lr")
    warmup_epochs: NonNegativeFloat = Field(description="linear warm-up length in epochs")
    warmup_lr_ratio: Annotated[float, Field(gt=0, le=1)] = Field(description="warm-up start lr / lr")
    amp: Literal["auto", "bf16", "fp16", "off"] = Field(description="mixed precision")
    grad_clip_norm: PositiveFloat | None = Field(description="max gradient norm; null disables")
    grad_accumulation: PositiveInt = Field(description="optimiser step every N batches")
    ema: EmaConfig
    early_stopping_patience: NonNegativeInt = Field(description="epochs without improvement; 0 disables")
    early_stopping_min_delta: NonNegativeFloat = Field(description="smallest change that counts as improvement")
    seed: NonNegativeInt = Field(description="global RNG seed")
    deterministic: bool = Field(description="deterministic algorithms (slower)")
    num_workers: NonNegativeInt = Field(description="data-loader workers")
    device: str = Field(description="auto | cpu | cuda | cuda:N | mps")

    @field_validator("amp", mode="before")
    @classmethod
    def _amp_bool(cls, value: Any) -> Any:
        # `amp=true` / `amp=false` read naturally; map them onto the named modes.
        if value is True:
            return "auto"
        if value is False:
            return "off"
        return value

    _device_in = field_validator("device", mode="before")(_device_to_str)
    _device_ok = field_validator("device")(_check_device)


# --------------------------------------------------------------------------------------------------
# checkpointing


class CheckpointingConfig(SectionModel):
    """What the loop saves and how it resumes."""

    save_best: bool = Field(description="keep best.pt, judged by monitor")
    save_last: bool = Field(description="keep last.pt with the full training state")
    save_every_n_epochs: NonNegativeInt = Field(description="extra snapshots every N epochs; 0 disables")
    monitor: str = Field(min_length=1, description="metric deciding 'best'; auto: the task's main metric")
    mode: Literal["max", "min"] = Field(description="max: larger monitored value is better")
    keep_last_n: PositiveInt = Field(description="periodic snapshots kept on disk")
    resume: bool | str = Field(description="false | true (last.pt of the experiment) | checkpoint path")

    @model_validator(mode="after")
    def _loss_is_minimised(self) -> CheckpointingConfig:
        if "loss" in self.monitor.lower() and self.mode == "max":
            raise ValueError(f"monitor '{self.monitor}' is a loss, so mode must be 'min'")
        return self


# --------------------------------------------------------------------------------------------------
# teachers


class LoraConfig(SectionModel):
    """LoRA adapter settings, passed to peft's LoraConfig."""

    r: PositiveInt = Field(description="adapter rank")
    alpha: PositiveInt = Field(description="scaling numerator (scaling = alpha / r)")
    dropout: UnitOpenFloat = Field(description="dropout on the adapter input")
    bias: Literal["none", "all", "lora_only"] = Field(description="which biases are trained")
    target_modules: str | list[str] = Field(description="full-match regex or list of module names")

    _targets_ok = field_validator("target_modules")(_check_regex)


class GroundingDinoLossConfig(SectionModel):
    """Loss weights for Grounding DINO fine-tuning (DETR-style set loss)."""

    class_weight: NonNegativeFloat = Field(description="focal classification loss weight")
    bbox_weight: NonNegativeFloat = Field(description="L1 box loss weight")
    giou_weight: NonNegativeFloat = Field(description="GIoU loss weight")
    focal_alpha: Probability = Field(description="focal loss alpha")
    focal_gamma: NonNegativeFloat = Field(description="focal loss gamma")


class GroundingDinoLoraConfig(SectionModel):
    """Box teacher: Grounding DINO with LoRA adapters."""

    weights: str = Field(min_length=1, description="Hugging Face id or local folder")
    lora: LoraConfig
    freeze_image_backbone: bool = Field(description="keep the Swin backbone frozen")
    freeze_text_backbone: bool = Field(description="keep the BERT text encoder frozen")
    epochs: PositiveInt = Field(description="fine-tuning epochs")
    batch_size: PositiveInt = Field(description="images per batch")
    lr: PositiveFloat = Field(description="adapter learning rate")
    weight_decay: NonNegativeFloat = Field(description="weight decay")
    shortest_edge: PositiveInt = Field(description="teacher input: short side in pixels")
    longest_edge: PositiveInt = Field(description="teacher input: long side cap in pixels")
    max_text_len: PositiveInt = Field(description="prompt length budget in tokens")
    prompts: dict[str, str] = Field(description="class name -> prompt phrase; empty: class names")
    box_threshold: Probability = Field(description="minimum box score kept")
    text_threshold: Probability = Field(description="minimum token score for a matched phrase")
    loss: GroundingDinoLossConfig

    @model_validator(mode="after")
    def _edges(self) -> GroundingDinoLoraConfig:
        if self.longest_edge < self.shortest_edge:
            raise ValueError(f"longest_edge ({self.longest_edge}) is smaller than shortest_edge ({self.shortest_edge})")
        return self


class SamLoraConfig(SectionModel):
    """Mask teacher: SAM prompted with boxes, LoRA on the mask decoder."""

    weights: str = Field(min_length=1, description="Hugging Face id or local folder")
    lora: LoraConfig
    freeze_image_encoder: bool = Field(description="keep the ViT image encoder frozen")
    freeze_prompt_encoder: bool = Field(description="keep the prompt encoder frozen")
    train_iou_head: bool = Field(description="also fine-tune the IoU prediction head")
    cache_image_embeddings: bool = Field(description="compute image embeddings once and reuse them")
    multimask_output: bool = Field(description="three candidate masks per prompt instead of one")
    epochs: PositiveInt = Field(description="fine-tuning epochs")
    batch_size: PositiveInt = Field(description="images per batch")
    lr: PositiveFloat = Field(description="adapter learning rate")
    weight_decay: NonNegativeFloat = Field(description="weight decay")
    box_prompt_jitter: Annotated[float, Field(ge=0, le=0.5)] = Field(
        description="box-prompt noise as a fraction of box size"
    )
    mask_threshold: float = Field(description="logit threshold for binary masks")
    dice_weight: NonNegativeFloat = Field(description="dice loss weight")
    bce_weight: NonNegativeFloat = Field(description="binary cross-entropy loss weight")
    iou_weight: NonNegativeFloat = Field(description="IoU-head MSE loss weight")

    @model_validator(mode="after")
    def _cache_needs_frozen_encoder(self) -> SamLoraConfig:
        if self.cache_image_embeddings and not self.freeze_image_encoder:
            raise ValueError(
                "cache_image_embeddings needs freeze_image_encoder: a trained encoder changes its embeddings"
            )
        if self.dice_weight == 0 and self.bce_weight == 0:
            raise ValueError("dice_weight and bce_weight are both 0, so the mask loss is empty")
        return self


# --------------------------------------------------------------------------------------------------
# student and distillation


class StudentConfig(SectionModel):
    """The small ultralytics YOLO model that is deployed."""

    model: str | None = Field(description="null: from the data (yolov8s or yolov8s-seg); or a name/path")
    pretrained: bool = Field(description="start from pretrained weights")
    imgsz: PositiveInt = Field(description="training and export input size")
    epochs: PositiveInt = Field(description="training epochs")
    batch: PositiveInt = Field(description="images per batch")
    patience: NonNegativeInt = Field(description="early-stopping patience in epochs")
    nbs: PositiveInt = Field(description="nominal batch size for loss scaling")
    warmup_epochs: NonNegativeFloat = Field(description="learning-rate warm-up epochs")
    plots: bool = Field(description="ultralytics' own plots (labels, PR curves, batches) in the run folder")
    optimizer: Literal["auto", "SGD", "Adam", "AdamW", "NAdam", "RAdam", "RMSProp"] = Field(
        description="ultralytics optimiser"
    )
    lr0: PositiveFloat | None = Field(description="initial lr; null: chosen by ultralytics")
    workers: NonNegativeInt = Field(description="data-loader workers")
    cache: Literal[False, "ram", "disk"] = Field(description="false | ram | disk image cache")
    conf: Probability = Field(description="confidence threshold for predictions")
    iou: Probability = Field(description="NMS IoU threshold")
    max_det: PositiveInt = Field(description="maximum detections per image")

    @field_validator("cache", mode="before")
    @classmethod
    def _cache_true_is_ram(cls, value: Any) -> Any:
        # ultralytics reads `cache=True` as "ram"; accept it and store the explicit name.
        return "ram" if value is True else value

    @field_validator("model")
    @classmethod
    def _non_empty(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("empty model name; use null to pick it from the data")
        return value


class DistillationConfig(SectionModel):
    """How teacher knowledge reaches the student."""

    label_train_images: bool = Field(description="teacher labels on the training images (new objects, soft GT)")
    soft_targets: bool = Field(description="teacher per-class scores, confidence and mask quality in the loss")
    calibrate_thresholds: bool = Field(description="per-class gates at the teacher's best-F1 point on --val")
    class_thresholds: list[Probability] | None = Field(description="per-class score gates; null: calibrated")
    pseudo_label_conf: Probability = Field(description="global teacher score gate when not calibrating")
    nms_iou: Probability = Field(description="class-wise NMS IoU for teacher boxes")
    cross_class_iou: Probability = Field(description="IoU above which boxes of two classes are one object")
    merge_iou: Probability = Field(description="IoU above which a pseudo-label duplicates a GT box")
    teacher_min_ap: Probability = Field(description="refuse a teacher below this AP50-95 on --val")
    force_teacher: bool = Field(description="use a teacher that fails teacher_min_ap anyway")
    unknown_class_ap: Probability = Field(description="per-class AP on --val below which a class is unknown")
    unknown_classes: list[str] | None = Field(description="classes the teacher does not know; null: decided on --val")
    exclude: list[str] = Field(description="COCO files whose images are never labelled for training")
    feature_weight: NonNegativeFloat = Field(description="feature-imitation loss weight")
    logit_weight: NonNegativeFloat = Field(description="logit KD loss weight")
    dfl_weight: NonNegativeFloat = Field(description="box-distribution (DFL) KD loss weight")
    inherit_weights: bool = Field(description="initialise a from-scratch student from the YOLO teacher's weights")
    temperature: PositiveFloat = Field(description="KD temperature (logit and DFL terms)")
    use_ultralytics_distill_model: bool = Field(description="use ultralytics' built-in distill_model")
    ultralytics_teacher: str | None = Field(description="closed-set YOLO teacher checkpoint (--teacher)")
    teacher_dir: str | None = Field(description="train-teacher experiment folder (--teacher-dir)")
    teacher_conf: Probability = Field(description="score threshold the teacher predicts and caches with")
    teacher_imgsz: PositiveInt | None = Field(description="YOLO teacher labelling size; null: student imgsz")
    dis_weight: NonNegativeFloat = Field(description="ultralytics 'dis' loss gain")
    unlabeled_images: str | None = Field(description="folder of unlabelled images to pseudo-label")
    unlabeled_max_images: PositiveInt | None = Field(description="cap on unlabelled images; null: all")
    cache: bool = Field(description="cache teacher outputs per image")
    label_backend: Literal["local", "ray"] = Field(description="label here, or on a Ray cluster (distillkit[ray])")
    ray_address: str | None = Field(description="Ray cluster to join (auto or HOST:PORT); null: start one")
    ray_actors: PositiveInt | None = Field(description="teacher actors on Ray; null: one per GPU, else one per CPU")

    @model_validator(mode="after")
    def _teacher_for_builtin(self) -> DistillationConfig:
        if self.use_ultralytics_distill_model and not self.ultralytics_teacher:
            raise ValueError("use_ultralytics_distill_model needs ultralytics_teacher (a checkpoint path)")
        return self


# --------------------------------------------------------------------------------------------------
# classifier


class ClassifierConfig(SectionModel):
    """timm image classifiers, multi-class or multi-label."""

    model: str = Field(min_length=1, description="timm model name or checkpoint")
    pretrained: bool = Field(description="start from pretrained weights")
    weights: str | None = Field(description="local pretrained weights file; null: the timm/HF cache")
    num_classes: PositiveInt | None = Field(description="null: from the data")
    imgsz: PositiveInt | list[PositiveInt] = Field(description="input side, or [height, width]")
    keep_full_resolution: bool = Field(description="train at the images' own size (all must match)")
    cbam_stages: list[Annotated[int, Field(ge=1, le=4)]] = Field(description="stages followed by CBAM")
    drop_rate: UnitOpenFloat = Field(description="dropout before the head")
    drop_path_rate: UnitOpenFloat = Field(description="stochastic depth rate")
    loss: Literal["cross_entropy", "bce", "focal", "evidential"] = Field(description="training loss")
    label_smoothing: UnitOpenFloat = Field(description="label smoothing")
    focal_gamma: NonNegativeFloat = Field(description="focal loss gamma")
    focal_alpha: Literal["dynamic"] | Probability | None = Field(
        description="dynamic (class frequencies) | number | null"
    )
    multi_label: Literal["auto"] | bool = Field(description="auto (from the data) | true | false")
    threshold: Probability = Field(description="multi-label decision threshold")
    tune_thresholds: bool = Field(description="multi-label: per-class best-F1 thresholds tuned on validation")
    mixup_alpha: NonNegativeFloat = Field(description="mixup Beta alpha; 0 disables")
    cutmix_alpha: NonNegativeFloat = Field(description="cutmix Beta alpha; 0 disables")
    kd_teacher: str | None = Field(description="teacher model for knowledge distillation")
    kd_temperature: PositiveFloat = Field(description="KD softmax temperature")
    kd_alpha: Probability = Field(description="share of the KD loss")
    feature_weight: NonNegativeFloat = Field(description="feature-distillation loss weight")
    topk: list[PositiveInt] = Field(min_length=1, description="top-k accuracies reported")
    calibrate: bool = Field(description="fit a softmax temperature on the validation set")
    # research techniques (distillkit.classify.research); every default leaves the plain classifier
    hybrid_vit: str | None = Field(description="timm ViT/Swin fused with `model` as a hybrid CNN+ViT backbone")
    fusion_dim: PositiveInt = Field(description="hybrid: width of the fused, gated features")
    token_learner_tokens: NonNegativeInt = Field(description="hybrid: TokenLearner tokens on the ViT stream; 0 off")
    token_merging_ratio: Annotated[float, Field(ge=0, le=0.5)] = Field(description="ToMe share merged per block")
    lora_rank: NonNegativeInt = Field(description="LoRA adapter rank (peft), backbone frozen; 0 off")
    head: Literal["linear", "arcface", "adaface", "curricularface"] = Field(description="classifier head")
    margin_scale: PositiveFloat = Field(description="margin heads: cosine scale s")
    margin: NonNegativeFloat = Field(description="margin heads: margin m")
    supcon: bool = Field(description="this run is a supervised-contrastive pre-training phase")
    num_views: Annotated[int, Field(ge=2)] = Field(description="SupCon views per image")
    supcon_temperature: PositiveFloat = Field(description="SupCon temperature")
    mixing: Literal["auto", "none", "mixup", "cutmix", "tokenmix"] = Field(description="batch mixing strategy")
    mixing_alpha: PositiveFloat = Field(description="Beta(alpha, alpha) of the mixing strategy")
    evidential_kl_weight: NonNegativeFloat = Field(description="evidential loss: KL regulariser weight")
    evidential_anneal_epochs: PositiveInt = Field(description="evidential loss: epochs to reach the full KL weight")
    sam_rho: NonNegativeFloat = Field(description="sharpness-aware minimisation radius; 0 off")
    lookahead_k: NonNegativeInt = Field(description="Lookahead sync period k; 0 off")
    lookahead_alpha: Annotated[float, Field(gt=0, le=1)] = Field(description="Lookahead slow-weight step alpha")
    grad_centralization: bool = Field(description="zero-mean gradients of weight tensors")
    compile: bool = Field(description="torch.compile the model")

    @model_validator(mode="after")
    def _coherent(self) -> ClassifierConfig:
        if isinstance(self.imgsz, list) and len(self.imgsz) != 2:
            raise ValueError(f"imgsz is a list of {len(self.imgsz)} values; give one side or [height, width]")
        if self.multi_label is True and self.loss == "cross_entropy":
            raise ValueError("multi_label is true, which needs loss bce or focal, not cross_entropy")
        if len(set(self.cbam_stages)) != len(self.cbam_stages):
            raise ValueError("cbam_stages lists a stage twice")
        return self


# --------------------------------------------------------------------------------------------------
# the data-derived layer

Teacher = Literal["grounding_dino", "sam"]


class DataSection(SectionModel):
    """What the dataset says: classes, mapping, and which teachers and student it calls for."""

    dataset: str | None = Field(description="annotation file the values were read from")
    num_classes: NonNegativeInt = Field(description="number of categories")
    class_names: list[str] = Field(description="class names in training order (COCO id order)")
    class_mapping: dict[int, int] = Field(description="COCO category id -> class index")
    has_boxes: bool = Field(description="some annotation has a box")
    has_masks: bool = Field(description="some annotation has a mask")
    teachers: list[Teacher] = Field(description="teachers the data calls for")
    student: str | None = Field(description="student the data calls for")

    @model_validator(mode="after")
    def _consistent(self) -> DataSection:
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"num_classes is {self.num_classes} but there are {len(self.class_names)} names")
        if sorted(self.class_mapping.values()) != list(range(len(self.class_mapping))):
            raise ValueError("class_mapping must map category ids onto 0..num_classes-1, each once")
        if len(self.class_mapping) != self.num_classes:
            raise ValueError(f"class_mapping has {len(self.class_mapping)} entries for {self.num_classes} classes")
        if len(set(self.teachers)) != len(self.teachers):
            raise ValueError("a teacher is listed twice")
        return self


DATA_SECTION = "data"

#: Section name (= YAML file stem in ``defaults/``) → schema, in the order configs are written.
SECTIONS: dict[str, type[SectionModel]] = {
    "preprocessing": PreprocessingConfig,
    "augmentation": AugmentationConfig,
    "training_dynamics": TrainingDynamicsConfig,
    "checkpointing": CheckpointingConfig,
    "teacher_grounding_dino_lora": GroundingDinoLoraConfig,
    "teacher_sam_lora": SamLoraConfig,
    "student": StudentConfig,
    "distillation": DistillationConfig,
    "classifier": ClassifierConfig,
}

#: Every section schema including the data layer.
ALL_SCHEMAS: dict[str, type[SectionModel]] = {DATA_SECTION: DataSection, **SECTIONS}

#: Keys a section no longer has, with what took their place. A saved config from an earlier version
#: that still holds one reads back without it (``load_experiment_config``, with a DeprecationWarning);
#: anywhere else (defaults, ``--set``) it is an unknown key.
REMOVED_KEYS: dict[str, dict[str, str]] = {
    "preprocessing": {
        "imgsz": "the input size is student.imgsz, classifier.imgsz or the teacher's own",
        "resize_mode": "YOLO students letterbox (ultralytics), classifiers resize to classifier.imgsz",
        "keep_ratio": "classifiers resize to classifier.imgsz, or keep their size with keep_full_resolution",
        "pad_value": "YOLO students pad with grey 114, as ultralytics does",
    },
}
