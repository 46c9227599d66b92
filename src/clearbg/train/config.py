"""One typed training config: defaults that run on a laptop, a YAML file, then ``key=value``.

``TrainConfig`` is the only place a training setting lives. The CLI, torchrun workers, Spark's
TorchDistributor and Optuna all build one and hand it to ``clearbg.train.loop.train``; the
resolved config goes into every checkpoint (``to_dict``) and into MLflow as params.

Precedence, last wins: the dataclass defaults, a YAML file, then overrides such as
``epochs=3``, ``loss.iou=0.5`` or ``augment.strength=0.5``. Values are type-checked against the
field annotations; an error names the key, what it expected and where the value came from.

Example:
    >>> config = load_config("train.yaml", ["epochs=3", "loss.iou=0.5"])   # doctest: +SKIP
    >>> config = load_config(overrides=["data=prepared/", "batch_size=auto"])
    >>> config.batch_size, config.loss.iou
    ('auto', 0.0)
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from clearbg.data.augment import AugmentConfig
from clearbg.errors import ClearbgError

__all__ = ["ConfigError", "LossConfig", "TrainConfig", "load_config", "PRECISIONS", "SCHEDULERS"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SCHEDULERS = ("cosine", "plateau", "none")


class ConfigError(ClearbgError, ValueError):
    """A training setting is unknown, of the wrong type, or out of range."""


@dataclass
class LossConfig:
    """Weights of the loss terms; each term is applied to the fused map and every side output."""

    bce: float = 1.0  # binary cross-entropy on logits: the U2-Net paper's deep-supervision loss
    iou: float = 0.0  # soft IoU (1 - sum(p*y) / sum(p + y - p*y)): favours whole-object overlap
    ssim: float = 0.0  # 1 - SSIM (11x11 Gaussian window, as in BASNet): favours crisp structure
    boundary: float = 0.0  # BCE on the pixels within 2 px of the true edge only: favours clean edges

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"loss.{f.name} must be a number >= 0, got {value!r}")
            setattr(self, f.name, float(value))
        if not any(getattr(self, f.name) > 0 for f in dataclasses.fields(self)):
            raise ConfigError("all loss weights are 0; set at least one of loss.bce, loss.iou, loss.ssim, loss.boundary > 0")


@dataclass
class DistillConfig:
    """Knowledge distillation: each training target blends the true mask with a teacher's map
    (``(1 - weight) * mask + weight * teacher``), computed once per run (``train/distill.py``)."""

    teacher: str | None = None  # a model reference (isnet.general-use, a best.pt, models:/...); None: off
    weight: float = 0.5  # the teacher's share of the target, 0..1

    def __post_init__(self) -> None:
        if not isinstance(self.weight, (int, float)) or isinstance(self.weight, bool) or not 0 <= self.weight <= 1:
            raise ConfigError(f"distill.weight must be a number in [0, 1], got {self.weight!r}")
        self.weight = float(self.weight)


DEFAULT_LR_FINE_TUNE = 1e-4  # from pretrained weights (official, a checkpoint, a registered model)
DEFAULT_LR_SCRATCH = 1e-3  # from a random init


@dataclass
class TrainConfig:
    """Everything one training run needs. Defaults fine-tune u2netp on a laptop CPU.

    ``batch_size`` is per process: under torchrun with N processes a step sees N x batch_size
    images (the DDP convention); ``lr`` is not rescaled for you.
    """

    data: str  # prepared dataset folder or s3:// prefix (``clearbg prepare``); required
    out: str = "runs"  # local folder for runs: <out>/<run_name>/checkpoints, tensorboard, config.yaml
    run_name: str | None = None  # None: "<model>-<dataset folder name>", stable so a rerun resumes it
    model: str = "u2netp"  # registry name (``clearbg models``): u2netp, u2net, unet, ...
    init: str = "official"  # "official" weights | "scratch" | a checkpoint path | another registry name
    size: int = 320  # training resolution (square); read from the nearest prepared size
    epochs: int = 10  # passes over the training split
    max_steps: int | None = None  # stop after this many optimizer steps in total (None: run all epochs)
    batch_size: int | str = 8  # images per step and process, or "auto": the largest that fits in memory
    lr: float | None = None  # peak learning rate (AdamW) after the warm-up; None: 1e-4 from pretrained weights, 1e-3 from scratch
    weight_decay: float = 1e-4  # AdamW decoupled weight decay
    scheduler: str = "cosine"  # after warm-up: "cosine" to 0 | "plateau" (halve on flat val IoU) | "none"
    warmup_steps: int = 100  # linear warm-up from lr/100 over this many steps (capped at a tenth of the run)
    freeze_bn: bool = False  # BatchNorm normalises with its running statistics while fine-tuning (small sets)
    grad_clip: float = 1.0  # clip the global gradient norm to this (0 = off)
    precision: str = "auto"  # "auto" (bf16 on GPUs and AMX CPUs, else fp16 on GPU, fp32 on CPU) | "fp32" | "bf16" | "fp16" (CUDA)
    channels_last: bool = True  # NHWC activations: faster convolutions with oneDNN and cuDNN
    loss: LossConfig = field(default_factory=LossConfig)  # loss term weights
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # on-the-fly augmentation (clearbg.data.augment)
    distill: DistillConfig = field(default_factory=DistillConfig)  # a teacher's maps blended into the targets
    balance: dict[str, float] | None = None  # cluster -> share of training draws ({} = equal); needs `clearbg cluster`
    workers: int = 2  # DataLoader worker processes per training process (0: load in the main process)
    seed: int = 0  # model init, data order and augmentation: same seed, same run
    val_every: int = 1  # validate every N epochs (and always after the last); 0 = only after the last
    checkpoint_every: int = 0  # also save latest.pt every N steps (0: at each epoch end only)
    resume: str = "auto"  # "auto": continue <run_dir>/checkpoints/latest.pt if present | "never" | a checkpoint path
    tracking_uri: str | None = None  # MLflow URI; None: sqlite:///<out>/mlflow.db, artifacts in <out>/mlartifacts; "off"
    experiment: str = "clearbg"  # MLflow experiment name
    tensorboard: bool = True  # also write TensorBoard events to <run_dir>/tensorboard
    device: str | None = None  # "cpu", "cuda", "cuda:1"; None: CUDA when available
    profile: int = 0  # time this many steps by phase and record their operators (RUN/profile.txt, TensorBoard)

    def __post_init__(self) -> None:
        if isinstance(self.loss, Mapping):
            self.loss = _build(LossConfig, self.loss, "loss.")
        if isinstance(self.augment, Mapping):
            self.augment = _build(AugmentConfig, self.augment, "augment.")
        if isinstance(self.distill, Mapping):
            self.distill = _build(DistillConfig, self.distill, "distill.")
        self.validate()

    @property
    def peak_lr(self) -> float:
        """The learning rate used: ``lr``, or the default for ``init``. Fine-tuning pretrained
        weights at 1e-3 wrecks them (u2netp: val IoU 0.94 -> 0.41 in 5 steps); 1e-4 keeps them."""
        if self.lr is not None:
            return float(self.lr)
        return DEFAULT_LR_SCRATCH if self.init == "scratch" else DEFAULT_LR_FINE_TUNE

    def validate(self) -> None:
        """Check ranges and choices (types are checked by ``load_config`` / ``from_dict``).

        Raises:
            ConfigError: naming the key and the allowed values.
        """
        if not isinstance(self.data, str) or not self.data:
            raise ConfigError("data is required: the prepared dataset folder (--data DIR, or data: in the YAML)")
        positive = {"size": self.size, "epochs": self.epochs}
        for key, value in positive.items():
            if value < 1:
                raise ConfigError(f"{key} must be >= 1, got {value}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1 or null, got {self.max_steps}")
        if isinstance(self.batch_size, str) and self.batch_size != "auto":
            raise ConfigError(f"batch_size must be a positive integer or 'auto', got {self.batch_size!r}")
        if isinstance(self.batch_size, int) and self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1 or 'auto', got {self.batch_size}")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        for key in ("weight_decay", "grad_clip", "warmup_steps", "workers", "val_every", "checkpoint_every", "profile"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)}")
        for key, choices in (("scheduler", SCHEDULERS), ("precision", PRECISIONS)):
            if getattr(self, key) not in choices:
                raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {getattr(self, key)!r}")
        if not self.init:
            raise ConfigError("init must be 'official', 'scratch', a checkpoint path or a registry name")
        if not self.resume:
            raise ConfigError("resume must be 'auto', 'never' or a checkpoint path")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "dict") -> TrainConfig:
        """Build from a plain (nested) dict, e.g. a checkpoint's ``config`` or MLflow params.

        Raises:
            ConfigError: an unknown key or a value of the wrong type, naming the key.

        Example:
            >>> TrainConfig.from_dict({"data": "ds", "loss": {"iou": 0.5}}).loss.iou
            0.5
        """
        return _build(cls, values, "", source)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of every field (YAML/JSON-safe); ``from_dict`` reads it back."""
        return _plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        """The config as YAML, loadable with ``load_config(path)``."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """The defaults, then a YAML file, then ``key=value`` overrides (dotted keys for nested fields).

    Args:
        path: a YAML mapping of TrainConfig fields (nested ``loss:`` / ``augment:`` mappings
            allowed), or None.
        overrides: ``"epochs=3"``, ``"loss.iou=0.5"``, ``"augment.strength=0"``,
            ``"balance={a: 0.5}"``, ``"max_steps=null"``. Values are read as YAML, so lists and
            mappings work.

    Returns:
        The validated config.

    Raises:
        ConfigError: unreadable YAML, an unknown key (with the closest known one), a value of
            the wrong type or out of range; the message names the key and where it came from.

    Example:
        >>> load_config(overrides=["data=ds", "lr=3e-4", "loss.iou=1"]).lr
        0.0003
    """
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except OSError as err:
            raise ConfigError(f"cannot read config file {path}: {err.strerror or err}") from err
        except yaml.YAMLError as err:
            raise ConfigError(f"{path} is not valid YAML: {err}") from err
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{path} must hold a mapping of config keys, found {type(loaded).__name__}")
        for key, value in loaded.items():
            _set(values, sources, str(key), value, f"{path}")
    for item in overrides:
        key, sep, text = str(item).partition("=")
        key = key.strip().removeprefix("--")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. epochs=3 or loss.iou=0.5)")
        _set(values, sources, key.replace("-", "_"), _RawText(text.strip()), f"override {item!r}")
    return _build(TrainConfig, values, "", sources)


# --------------------------------------------------------------------------- parsing machinery


class _RawText(str):
    """An override's value as typed: parsed as YAML unless the field wants a string."""


def _set(values: dict[str, Any], sources: dict[str, str], key: str, value: Any, source: str) -> None:
    """Store ``a.b.c = value`` into nested ``values``; remember where each key came from."""
    parts = key.split(".")
    node = values
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    if isinstance(value, Mapping) and isinstance(node.get(parts[-1]), dict):
        for sub, subvalue in value.items():  # a YAML mapping merges into earlier nested keys
            _set(values, sources, f"{key}.{sub}", subvalue, source)
        return
    node[parts[-1]] = value
    sources[key] = source


def _build(cls: type, values: Mapping[str, Any], prefix: str, sources: Mapping[str, str] | str = "dict"):
    """Construct dataclass ``cls`` from ``values`` with every field type-checked."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        full = f"{prefix}{key}"
        where = sources if isinstance(sources, str) else sources.get(full, _source_below(sources, full))
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            raise ConfigError(
                f"unknown config key {full!r}{hint} in {where}; known keys: {', '.join(prefix + k for k in fields)}"
            )
        kwargs[key] = _coerce(full, value, hints[key], where, sources)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except TypeError as err:  # a required field is missing
        missing = [name for name, f in fields.items() if name not in kwargs and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ConfigError(f"{prefix}{missing[0]} is required (e.g. --data DIR or {prefix}{missing[0]}=...)") from err
        raise ConfigError(f"invalid {cls.__name__}: {err}") from err
    except ValueError as err:  # AugmentConfig's own range checks
        raise ConfigError(f"invalid {prefix.rstrip('.') or cls.__name__} setting: {err}") from err


def _source_below(sources: Mapping[str, str], key: str) -> str:
    for name, where in sources.items():
        if name.startswith(key + "."):
            return where
    return "the config"


_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {len(typing.get_args(tp))} numbers"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return _TYPE_WORDS.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(key: str, value: Any, tp: Any, where: str, sources: Mapping[str, str] | str) -> Any:
    """``value`` as type ``tp``, or a ConfigError naming ``key``."""
    raw = value if isinstance(value, _RawText) else None
    if raw is not None:
        if tp is str:
            return str(raw)
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = str(raw)
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and type(None) in args):
            if type(None) in args:
                return None
        errors = []
        # Try str last so "3" becomes 3 for `int | str`, while "auto" stays a string.
        for arg in sorted((a for a in args if a is not type(None)), key=lambda a: a is str):
            try:
                return _coerce(key, value if raw is None or arg is not str else raw, arg, where, sources)
            except ConfigError as err:
                errors.append(err)
        raise ConfigError(f"{key} must be {_describe(tp)}, got {value!r} (in {where})")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping of its own keys (e.g. {key}.<name>=...), got {value!r} (in {where})")
        return _build(tp, value, f"{key}.", sources)
    if origin is dict:
        key_type, value_type = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping, e.g. {{a: 0.5}}, got {value!r} (in {where})")
        return {_coerce(f"{key}.<key>", k, key_type, where, sources): _coerce(f"{key}.{k}", v, value_type, where, sources)
                for k, v in value.items()}
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key} must be {_describe(tp)}, e.g. [0.5, 1.0], got {value!r} (in {where})")
        return tuple(_coerce(f"{key}[{i}]", v, a, where, sources) for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # a cluster id or a run name that looks like a number
    elif tp is Any:
        return value
    raise ConfigError(f"{key} must be {_describe(tp)}, got {value!r} (in {where})")


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
