"""Run configuration: typed sections (dataclasses) that OmegaConf checks, YAML presets and overrides.

A run is described by one `RunConfig` (data, model, loss, optim, train, eval). A YAML file
or a preset shipped in `igoas/configs/` fills in what differs from the defaults, and
dotted `key=value` overrides come last. A YAML file may name a `base:` preset or file it
extends, so related presets (the ablation, the quick demo) state only their differences.
Typing mistakes, unknown keys and out-of-range values are reported as `ConfigError`
naming the key, before any data is read.
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field, fields, is_dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Optional

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from igoas.imaging.preprocess import IMAGENET_MEAN, IMAGENET_STD
from igoas.utils.errors import ConfigError

PRECISIONS = ("auto", "fp32", "tf32", "bf16", "fp16")  # what igoas.compute.speed understands

# torchvision ImageNet weight sets `model.pretrained` may name (loaded by igoas.model.pretrained)
IMAGENET_WEIGHTS = ("imagenet1k_v1", "imagenet1k_v2")
PRETRAINED_TRUE = IMAGENET_WEIGHTS[0]


def weights_name(pretrained: bool | str | Path | None) -> str | None:
    """The torchvision weight-set name `pretrained` asks for (`True` -> `imagenet1k_v1`),
    or None when it is `False`/None or a file path."""
    if pretrained is True:
        return PRETRAINED_TRUE
    if isinstance(pretrained, str) and pretrained.lower() in IMAGENET_WEIGHTS:
        return pretrained.lower()
    return None


# A YAML file may extend another one; chains longer than this are almost surely a cycle.
_MAX_BASE_DEPTH = 8

# What a key means to a resumed run and to a config fingerprint, declared on the key itself
# (`field(metadata=...)`) and read back by `keys_marked`. Unmarked keys are overridable: a
# resume may change them and they take effect from the resume point.
# fixed: the checkpoint's weights, data order or random streams belong to the value, so a resume refuses a change;
# runtime: where, in how many pieces or how visibly a run executes: overridable, and outside the fingerprint;
# ignored: differs by nature between the saved config and a resume: never compared, and outside the fingerprint.
FIXED, RUNTIME, IGNORED = ({"resume": mark} for mark in ("fixed", "runtime", "ignored"))


@dataclass
class DataConfig:
    """Which dataset, how images are prepared and how batches are drawn."""

    dataset: str = field(default="market1501", metadata=FIXED)
    root: str = field(default="data", metadata=RUNTIME)
    options: dict[str, Any] = field(default_factory=dict, metadata=FIXED)  # extra arguments of the dataset builder
    # Datasets evaluated during and after training (empty: the training dataset itself);
    # `target_options` maps a target's name to its builder arguments.
    targets: list[str] = field(default_factory=list)
    target_options: dict[str, Any] = field(default_factory=dict)
    height: int = field(default=384, metadata=FIXED)
    width: int = field(default=128, metadata=FIXED)
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN), metadata=FIXED)
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD), metadata=FIXED)
    # Training augmentation: keyword options of `igoas.data.build_transforms` (flip, pad,
    # color_jitter, random_erasing, corruption: the probability of a random benchmark
    # corruption); empty = its defaults (random horizontal flip only).
    augment: dict[str, Any] = field(default_factory=dict)
    # "random" or "identity" (P identities x K images, for the triplet loss)
    sampler: str = field(default="random", metadata=FIXED)
    num_instances: int = field(default=4, metadata=FIXED)  # K of the identity sampler
    # global batch: split over the processes of a distributed run
    batch_size: int = field(default=64, metadata=FIXED)
    drop_last: bool = field(default=True, metadata=FIXED)
    # loader processes (deterministic runs load in the main process)
    num_workers: int = field(default=4, metadata=RUNTIME)
    # a corrupt training image: "skip" (logged with its path) or "fail"
    on_error: str = field(default="skip", metadata=RUNTIME)


@dataclass
class ModelConfig:
    """`build_model` arguments; `options` holds the network's remaining keyword options."""

    name: str = "igoas"
    backbone: str = "resnet50"
    # imagenet1k_v1 | imagenet1k_v2 (torchvision's ImageNet weights), a path to a state dict,
    # false, or true = imagenet1k_v1 (see igoas.model.pretrained)
    pretrained: Any = True
    occlusion: str = "igo"
    occlusion_options: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class LossConfig:
    """Which loss terms to use and how to weigh them (defaults: the authors' recipe); read by `igoas.model.losses`."""

    label_smoothing: float = 0.1
    id_weighting: str = "adaptive"        # "adaptive" (softmax of the losses) or "mean"
    mask_loss: str = "channel_mean"       # "channel_mean" (authors) or "per_channel"
    mask_loss_weight: float = 1.0
    mask_loss_global: bool = True         # also push the global branch's map to zero in the region
    triplet: str | None = None            # None, "margin" or "soft"
    triplet_margin: float = 0.3
    triplet_weight: float = 1.0
    # > 0: center loss (Wen et al. 2016, as BoT adds it) on the triplet's features with this
    # weight; its class centers are training state (saved, and a resume keeps the value). 0: off.
    center_weight: float = field(default=0.0, metadata=FIXED)


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule (stepped every iteration, defined per epoch)."""

    name: str = field(default="adam", metadata=FIXED)  # "adam" or "sgd"
    lr: float = 3e-4
    weight_decay: float = 5e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    momentum: float = 0.9
    nesterov: bool = False
    schedule: str = "multi_step"  # "multi_step", "cosine" or "constant"
    milestones: list[int] = field(default_factory=lambda: [20, 40])
    gamma: float = 0.1
    warmup_epochs: float = 0.0  # linear warm-up length (may be fractional)
    warmup_start_factor: float = 0.01  # warm-up starts at lr * this
    min_lr_factor: float = 0.0  # the cosine schedule ends at lr * this
    grad_clip: Optional[float] = None  # max global gradient norm; null = no clipping
    # learning rate of the center loss's own plain SGD on its centers (BoT: 0.5), applied to
    # the unweighted center gradient and never scheduled; used only when loss.center_weight > 0
    center_lr: float = 0.5


@dataclass
class TrainConfig:
    """Length, reproducibility, speed and bookkeeping of a training run."""

    epochs: int = 90
    fixbase_epochs: int = 5  # first epochs train only `fixbase_modules` (the new layers)
    fixbase_modules: Optional[list[str]] = None  # null: the model's own `fixbase_modules`
    seed: int = field(default=1, metadata=FIXED)
    deterministic: bool = False  # deterministic kernels: CPU runs become bit-reproducible
    device: str = field(default="auto", metadata=RUNTIME)  # "auto", "cpu", "cuda" or "cuda:N"
    precision: str = "auto"  # "auto", "fp32", "tf32", "bf16", "fp16" (see igoas.compute.speed)
    channels_last: Any = "auto"  # true, false or "auto"
    cpu_threads: Optional[int] = field(default=None, metadata=RUNTIME)  # compute threads on CPU (null: torch's default)
    sync_batchnorm: bool = True  # distributed runs normalise over the global batch (with replicas: 1)
    # N > 1: nn.DataParallel's semantics over N replicas (own occlusion draw and BatchNorm
    # batch per replica, replica 0's running statistics); see igoas.training.replicas
    replicas: int = 1
    output_dir: str = field(default="runs/igoas", metadata=IGNORED)
    log_every: int = field(default=20, metadata=RUNTIME)  # iterations between log records
    # also save last.pth every N iterations (0: at epoch ends only)
    checkpoint_every_iters: int = field(default=0, metadata=RUNTIME)
    # stop cleanly after N iterations in total (resumable)
    stop_after_iters: Optional[int] = field(default=None, metadata=IGNORED)
    tensorboard: bool = field(default=True, metadata=RUNTIME)
    progress_bar: bool = field(default=True, metadata=RUNTIME)
    # > 0: keep an exponential moving average of the weights (this decay per optimiser
    # step), evaluate it and deploy it as the checkpoints' `model` (0: off)
    ema_decay: float = field(default=0.0, metadata=FIXED)


@dataclass
class EvalConfig:
    """How and when the model is evaluated."""

    every: int = 4  # epochs between evaluations during training (0: only at the end)
    # also evaluate every N epochs (0: never): the authors' engine adds every 10th epoch
    also_every: int = 0
    metric: str = "euclidean"  # "euclidean" or "cosine"
    rerank: bool = False
    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3
    query_expansion: int = 0  # k > 0: each query averaged with its k nearest gallery features
    query_expansion_alpha: float = 0.0  # > 0: alpha-weighted query expansion
    flip: bool = False  # average the embeddings of each image and its mirror
    precision: str = "fp32"  # "auto", "fp32", "tf32", "bf16", "fp16" (the published run: tf32)
    max_rank: int = 50
    # TPR at these false positive rates beside R1/mAP in every evaluation table (as fast-reid);
    # runtime: they only add columns, which studies do not report
    fprs: list[float] = field(default_factory=lambda: [1e-4, 1e-3, 1e-2], metadata=RUNTIME)
    batch_size: int = field(default=128, metadata=RUNTIME)  # only groups the same evaluation differently
    num_workers: int = field(default=2, metadata=RUNTIME)


@dataclass
class RunConfig:
    """Everything one run needs; `igoas train` saves it resolved as `config.yaml`."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig, metadata=FIXED)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# Values restricted to a few names, and numbers that must be positive or non-negative;
# checked after every merge so a bad override fails before anything runs. The sampler,
# optimiser and schedule names are those of igoas.data.loaders and igoas.training.optim
# (they import this module, not the other way round, so that reading a config needs only
# OmegaConf; a test keeps the lists in step).
# Backbone names of igoas.model.backbone.BACKBONES (torchvision ResNets, IBN-a) and
# igoas.model.timm_backbones.TIMM_BACKBONES (built through timm; the baseline only).
BACKBONE_NAMES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet50_ibn_a", "resnet101_ibn_a",
                  "timm:resnet50", "timm:resnet101", "resnext50_32x4d", "convnext_tiny", "vit_small_patch16_224",
                  "vit_base_patch16_224", "swin_tiny_patch4_window7_224")

CHOICES: dict[str, tuple[str, ...]] = {
    "model.backbone": BACKBONE_NAMES,
    "data.sampler": ("random", "identity"),
    "data.on_error": ("skip", "fail"),
    "optim.name": ("adam", "sgd"),
    "optim.schedule": ("multi_step", "cosine", "constant"),
    "train.precision": PRECISIONS,
    "eval.precision": PRECISIONS,
    "eval.metric": ("euclidean", "cosine"),
}


@dataclass(frozen=True)
class Range:
    """The interval a numeric option must lie in; `describe` says it as a reader expects."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def describe(self) -> str:
        if self.high == math.inf:
            return "positive" if self.low == 0 and self.low_open else f"at least {_number(self.low)}"
        return (f"in {'(' if self.low_open else '['}{_number(self.low)}, {_number(self.high)}"
                f"{')' if self.high_open else ']'}")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


POSITIVE, NON_NEGATIVE = Range(0, low_open=True), Range(0)
PROBABILITY, FRACTION = Range(0, 1), Range(0, 1, high_open=True)
SEEDS = Range(0, 2**32 - 1)   # what numpy's and Python's generators take alike
RANGES: dict[str, Range] = {
    **dict.fromkeys(("data.height", "data.width", "data.batch_size", "data.num_instances", "optim.lr",
                     "optim.center_lr", "train.epochs", "train.log_every", "eval.batch_size", "eval.max_rank",
                     "eval.k1", "eval.k2"),
                    POSITIVE),
    **dict.fromkeys(("data.num_workers", "eval.num_workers", "optim.weight_decay", "optim.warmup_epochs",
                     "optim.momentum", "train.fixbase_epochs", "train.checkpoint_every_iters", "eval.every",
                     "eval.also_every", "eval.query_expansion", "eval.query_expansion_alpha",
                     "loss.mask_loss_weight", "loss.triplet_margin", "loss.triplet_weight",
                     "loss.center_weight"), NON_NEGATIVE),
    "optim.gamma": Range(0, 1, low_open=True),        # the factor at each milestone: above 0, a decay
    "optim.warmup_start_factor": Range(0, 1, low_open=True),
    "optim.min_lr_factor": PROBABILITY,
    "loss.label_smoothing": FRACTION,
    "eval.lambda_value": PROBABILITY,                 # the re-ranking's weight of the original distance
    "train.seed": SEEDS,
    "train.ema_decay": FRACTION,                      # 0 (off) up to, not including, 1 (weights that never move)
}
# data.augment's numeric options (the keys of igoas.data.build_transforms)
AUGMENT_RANGES: dict[str, Range] = {"flip": PROBABILITY, "pad": NON_NEGATIVE, "color_jitter": NON_NEGATIVE,
                                    "random_erasing": PROBABILITY, "corruption": PROBABILITY}


def keys_marked(*marks: str) -> tuple[str, ...]:
    """Dotted keys (or whole sections) whose `resume` metadata is one of `marks`, in schema
    order: the single source of the resume refusals and of the fingerprint's runtime keys."""
    return _marked(RunConfig(), marks)


def _marked(section: Any, marks: tuple[str, ...], prefix: str = "") -> tuple[str, ...]:
    found: list[str] = []
    for entry in fields(section):
        key, value = f"{prefix}{entry.name}", getattr(section, entry.name)
        if entry.metadata.get("resume") in marks:
            found.append(key)
        elif is_dataclass(value):
            found += _marked(value, marks, key + ".")
    return tuple(found)


def preset_names() -> list[str]:
    """Names of the presets shipped with igoas (file names without `.yaml`)."""
    folder = resources.files("igoas") / "configs"
    return sorted(entry.name[: -len(".yaml")] for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def preset_path(name: str) -> Path:
    """Path of a shipped preset, by name."""
    path = Path(str(resources.files("igoas") / "configs" / f"{name}.yaml"))
    if not path.is_file():
        raise ConfigError(f"no config file or preset named {name!r}; presets: {', '.join(preset_names())}")
    return path


def resolve_config_path(path_or_preset: str | os.PathLike[str], relative_to: Path | None = None) -> Path:
    """A YAML path as given (or beside `relative_to`), else a shipped preset of that name."""
    text = str(path_or_preset)
    candidates = [Path(text)]
    if relative_to is not None:
        candidates.insert(0, relative_to / text)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    if text.endswith((".yaml", ".yml")) and os.sep in text:
        raise ConfigError(f"{text}: no such config file")
    return preset_path(Path(text).name.removesuffix(".yaml").removesuffix(".yml"))


def _read_yaml(path: Path, depth: int = 0) -> DictConfig:
    """One YAML file merged over the files it extends through `base:`."""
    if depth > _MAX_BASE_DEPTH:
        raise ConfigError(f"{path}: more than {_MAX_BASE_DEPTH} nested 'base:' files; is there a cycle?")
    try:
        loaded = OmegaConf.load(path)
    except (OSError, OmegaConfBaseException, ValueError, yaml.YAMLError) as err:
        reason = " ".join(str(err).split())  # YAML errors span lines: where, then what
        raise ConfigError(f"{path}: cannot be read as YAML ({reason}); fix the file's syntax") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path}: a config file must be a mapping of sections (data:, model:, ...)")
    _refuse_empty(loaded, path)
    base = loaded.pop("base", None)
    if base is None:
        return loaded
    return _layer_over(_read_yaml(resolve_config_path(base, path.parent), depth + 1), loaded)


def _layer_over(lower: DictConfig, upper: DictConfig) -> DictConfig:
    """`upper` merged over `lower`, as config layers stack (base file, file, overrides).

    Dataset options belong to their dataset: a layer that switches `data.dataset` without
    giving `data.options` starts from none (a synthetic preset's `render`, `size` mean
    nothing to `custom`). An empty mapping for a free-form key (`options: {}`) empties it,
    as the `key={}` override does; any other mapping merges key by key.
    """
    lower = lower.copy()
    dataset = OmegaConf.select(upper, "data.dataset", default=None)
    if (dataset is not None and dataset != OmegaConf.select(lower, "data.dataset", default=None)
            and OmegaConf.select(upper, "data.options", default=None) is None):
        _empty(lower, "data.options")
    for key in _schema_free_form_keys():
        if _is_empty_mapping(OmegaConf.select(upper, key, default=None)):
            _empty(lower, key)
    return OmegaConf.merge(lower, upper)


def _empty(config: DictConfig, key: str) -> None:
    if OmegaConf.select(config, key, default=None) is not None:
        OmegaConf.update(config, key, {}, merge=False)


def _refuse_empty(loaded: DictConfig, path: Path) -> None:
    """An empty file is almost always a mistake (a truncated copy, the wrong path), not a wish for the defaults."""
    if len(loaded) == 0:
        raise ConfigError(f"{path}: the config file is empty; give at least one section (data:, model:, ...) "
                          "or `base: <preset>`, or leave out the config to run with the defaults")


def _merge(schema: DictConfig, layer: Any, source: str) -> DictConfig:
    try:
        return _layer_over(schema, layer if isinstance(layer, DictConfig) else OmegaConf.create(layer))
    except OmegaConfBaseException as err:
        raise ConfigError(f"{source}: {_describe(err)}") from None


def _describe(err: OmegaConfBaseException) -> str:
    key = getattr(err, "full_key", None)
    message = str(err).splitlines()[0]
    if "not in" in message and key:
        return f"unknown key '{key}' ({message}); check its spelling and section"
    return f"bad value for '{key}': {message}" if key else message


def load_config(path_or_preset: str | os.PathLike[str] | None = None, overrides: Iterable[str] = ()) -> DictConfig:
    """Defaults, then a YAML file or preset (if given), then `key=value` overrides; checked.

    `path_or_preset` is a YAML path or the name of a shipped preset (`igoas.config.preset_names()`).
    """
    config = OmegaConf.structured(RunConfig)
    if path_or_preset is not None:
        path = resolve_config_path(path_or_preset)
        config = _merge(config, _read_yaml(path), str(path))
    config = apply_overrides(config, overrides)
    validate(config)
    return config


def apply_overrides(config: DictConfig, overrides: Iterable[str]) -> DictConfig:
    """Merge dotted `section.key=value` strings (YAML values: `[1, 2]`, `null`, `true`), in order.

    A mapping merges into the mapping it overrides (`model.occlusion_options={slope: 0.1}`
    changes one option and keeps the preset's others); an empty one, `key={}`, empties a
    free-form mapping (`data.options`, `model.occlusion_options`, ...) at that point, so
    overrides after it fill it again. `data.dataset=OTHER` likewise drops the previous
    dataset's `data.options` (later `data.options.*` overrides fill them again).
    """
    overrides = list(overrides)
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override {item!r} is not of the form section.key=value (e.g. optim.lr=0.001)")
    pending: list[str] = []
    for item in overrides:
        key = item.partition("=")[0]
        if key == "data.dataset":  # applied on its own, in order: the switch drops the options set so far
            config = _merge(_merge(config, _parse_overrides(pending), "override"), _parse_overrides([item]), "override")
            pending = []
            continue
        if _is_empty_mapping(OmegaConf.select(_parse_overrides([item]), key)):
            config = _merge(config, _parse_overrides(pending), "override")
            pending = []
            if _is_free_form(OmegaConf.select(config, key, default=None)):
                config = config.copy()
                OmegaConf.update(config, key, {}, merge=False)
                continue
        pending.append(item)
    return _merge(config, _parse_overrides(pending), "override")


def _parse_overrides(overrides: list[str]) -> DictConfig:
    try:
        return OmegaConf.from_dotlist(overrides)
    except OmegaConfBaseException as err:
        raise ConfigError(f"overrides {overrides}: {_describe(err)}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"overrides {overrides}: a value is not valid YAML ({' '.join(str(err).split())}); "
                          "quote lists and strings, e.g. data.mean=[0.5,0.5,0.5]") from None


def _is_empty_mapping(value: Any) -> bool:
    return isinstance(value, DictConfig) and len(value) == 0


@functools.cache
def _schema_free_form_keys() -> tuple[str, ...]:
    return _free_form_keys(OmegaConf.structured(RunConfig))


def _free_form_keys(node: DictConfig, prefix: str = "") -> tuple[str, ...]:
    """Dotted keys of the schema's plain mappings (reader, model and occlusion options)."""
    found: list[str] = []
    for name in node:
        child = node._get_node(name)
        if isinstance(child, DictConfig):
            key = f"{prefix}{name}"
            found += [key] if _is_free_form(child) else list(_free_form_keys(child, key + "."))
    return tuple(found)


def _is_free_form(node: Any) -> bool:
    """A plain mapping (reader options, occlusion options), not a typed section of RunConfig."""
    return isinstance(node, DictConfig) and OmegaConf.get_type(node) is dict


def config_from_dict(values: dict[str, Any], source: str = "checkpoint") -> DictConfig:
    """Rebuild a checked config from its plain-dict form (as saved in checkpoints)."""
    config = _merge(OmegaConf.structured(RunConfig), values, source)
    validate(config)
    return config


def to_dict(config: DictConfig) -> dict[str, Any]:
    """The plain-dict form of a config (what checkpoints store)."""
    return OmegaConf.to_container(config, resolve=True)  # type: ignore[return-value]


def model_arguments(model: DictConfig) -> dict[str, Any]:
    """`build_model` keyword arguments of a config's `model` section, except the number of
    identities and the pretrained weights (those come from the data and the run)."""
    return {"name": model.name, "backbone": model.backbone, "occlusion": model.occlusion,
            "occlusion_options": to_dict(model.occlusion_options), **to_dict(model.options)}


# Keyword options of `igoas.data.build_transforms` that `data.augment` may set.
AUGMENT_OPTIONS = tuple(AUGMENT_RANGES)


def validate(config: DictConfig) -> None:
    """Check the values OmegaConf's types cannot: choices, signs, cross-field rules."""
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(config, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(allowed)}")
    _check_finite(config)
    for key, allowed_range in RANGES.items():
        _check_range(key, OmegaConf.select(config, key), allowed_range)
    for index, beta in enumerate(config.optim.betas):
        _check_range(f"optim.betas[{index}]", beta, FRACTION)
    pretrained = config.model.pretrained
    if not isinstance(pretrained, (bool, str)):
        raise ConfigError(f"model.pretrained must be {', '.join(IMAGENET_WEIGHTS)}, true, false or a path to a "
                          f"weight file, got {pretrained!r}")
    if isinstance(pretrained, str) and pretrained.lower().startswith("imagenet") and weights_name(pretrained) is None:
        raise ConfigError(f"model.pretrained={pretrained!r} is not a known weight set; choose "
                          f"{' or '.join(IMAGENET_WEIGHTS)} (or give a path to a weight file)")
    if config.train.channels_last not in (True, False, "auto"):
        raise ConfigError(f"train.channels_last must be true, false or auto, got {config.train.channels_last!r}")
    if config.data.sampler == "identity" and config.data.batch_size % config.data.num_instances:
        raise ConfigError(
            f"data.batch_size={config.data.batch_size} must be a multiple of data.num_instances="
            f"{config.data.num_instances} for the identity (PK) sampler"
        )
    if len(config.data.mean) != 3 or len(config.data.std) != 3:
        raise ConfigError("data.mean and data.std need one value per colour channel (3 each)")
    if not all(value > 0 for value in config.data.std):
        raise ConfigError(f"data.std values divide the pixels and must be positive, got {list(config.data.std)}")
    unknown = sorted(set(config.data.augment) - set(AUGMENT_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join('data.augment.' + key for key in unknown)}; "
                          f"data.augment takes {', '.join(AUGMENT_OPTIONS)}")
    for key, value in config.data.augment.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"data.augment.{key}={value!r} must be a number {AUGMENT_RANGES[key].describe()}")
        _check_range(f"data.augment.{key}", value, AUGMENT_RANGES[key])
    if not float(config.data.augment.get("pad", 0)).is_integer():
        raise ConfigError(f"data.augment.pad={config.data.augment.pad!r} is a number of pixels: give a whole number")
    if not all(0.0 < fpr <= 1.0 for fpr in config.eval.fprs):
        raise ConfigError(f"eval.fprs are false positive rates in (0, 1], got {list(config.eval.fprs)}")
    if len(config.optim.betas) != 2:
        raise ConfigError(f"optim.betas needs two values, got {list(config.optim.betas)}")
    if config.optim.grad_clip is not None and config.optim.grad_clip <= 0:
        raise ConfigError(f"optim.grad_clip must be positive or null, got {config.optim.grad_clip}")
    if config.train.replicas < 1:
        raise ConfigError(f"train.replicas must be 1 or more, got {config.train.replicas}")
    if config.data.batch_size % config.train.replicas:
        raise ConfigError(f"data.batch_size={config.data.batch_size} must be a multiple of train.replicas="
                          f"{config.train.replicas} (each replica takes an equal share, as DataParallel's 64 = 2 x 32)")
    if config.train.cpu_threads is not None and config.train.cpu_threads <= 0:
        raise ConfigError(f"train.cpu_threads must be positive or null, got {config.train.cpu_threads}")
    if config.train.stop_after_iters is not None and config.train.stop_after_iters <= 0:
        raise ConfigError(f"train.stop_after_iters must be positive or null, got {config.train.stop_after_iters}")


def _check_range(key: str, value: Any, allowed: Range) -> None:
    if not allowed.holds(value):
        raise ConfigError(f"{key} must be {allowed.describe()}, got {value!r}")


def _check_finite(config: DictConfig, prefix: str = "") -> None:
    """Refuse a NaN or infinite number anywhere in the config (a NaN passes every comparison
    test, and would surface only as a diverging loss)."""
    for key, value in config.items() if isinstance(config, DictConfig) else enumerate(config):
        name = f"{prefix}.{key}" if prefix and isinstance(key, str) else f"{prefix}[{key}]" if prefix else str(key)
        if isinstance(value, (DictConfig, ListConfig)):
            _check_finite(value, name)
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name} is {value}; give a finite number")
