"""The training configuration: one frozen, validated dataclass, saved beside every model."""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field, fields
from typing import Any

from headstart._internal.validation import (
    IMAGE_SIZE_RANGE,
    Constraints,
    Finite,
    Interval,
    LayerNames,
    Optional,
    Options,
    Satisfies,
    image_size_fits,
    invalid,
    validate,
)

__all__ = ["BN_POLICIES", "HEADS", "SCHEDULES", "TRAIN_CONSTRAINTS", "TrainConfig"]

# BN layers in frozen groups are always held in eval mode. The policy decides the rest:
# "eval": every BN layer stays in eval mode: running statistics never move; the
#         scale and shift of trainable groups still learn (the Keras guide's advice,
#         and what keeps a linear probe's head valid once fine-tuning starts);
# "train": BN layers in trainable groups update their statistics (training from scratch).
BN_POLICIES = ("eval", "train")

SCHEDULES = ("cosine", "onecycle")
HEADS = ("linear", "mlp")
CLASS_WEIGHTS = ("auto", "none", "balanced")


def _is_device(value: Any) -> bool:
    return isinstance(value, str) and (
        value in ("auto", "cpu", "mps", "cuda") or value.startswith("cuda:")
    )


_POSITIVE = Interval(numbers.Real, 0, None, closed="neither")
_NON_NEGATIVE = Interval(numbers.Real, 0, None)
_FRACTION = Interval(numbers.Real, 0, 1, closed="left")

# Each parameter's requirement, stated once (scikit-learn's ``_parameter_constraints``);
# a tuple is checked in order, so NaN reads "a finite number" before any range.
TRAIN_CONSTRAINTS: Constraints = {
    "head_lr": (Finite(), _POSITIVE),
    "base_lr": (Finite(), _POSITIVE),
    "layer_decay": (Finite(), Interval(numbers.Real, 0, 1, closed="right")),
    "weight_decay": (Finite(), _NON_NEGATIVE),
    "warmup_epochs": (Finite(), _NON_NEGATIVE),
    "label_smoothing": (Finite(), _FRACTION),
    "dropout": (Finite(), _FRACTION),
    "validation_fraction": (Finite(), _FRACTION),
    "probe_l2": (Finite(), _NON_NEGATIVE),
    "epochs": Interval(int, 1, None),
    "batch_size": Interval(int, 1, None),
    "head_hidden": Interval(int, 1, None),
    "patience": Interval(int, 0, None),
    "schedule": Options(SCHEDULES),
    "head": Options(HEADS),
    "bn_policy": Options(BN_POLICIES),
    "class_weights": Options(CLASS_WEIGHTS),
    "image_size": Optional(
        Satisfies(image_size_fits, IMAGE_SIZE_RANGE, bad=8),
        f"{IMAGE_SIZE_RANGE}, or unset for the backbone's own size",
    ),
    "layers": LayerNames(),
    "seed": Interval(int, 0, None),
    "device": Satisfies(_is_device, "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'", bad="gpu"),
    "freeze_groups": Interval(int, None, None),
    "num_workers": Interval(int, 0, None),
}


def _knob(default: Any, help: str, *, choices: tuple[str, ...] = (), alias: str = "") -> Any:
    """A field with its documentation (shared with the command line, which derives
    its flags from these)."""
    return field(default=default, metadata={"help": help, "choices": choices, "alias": alias})


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a training run. Strategies start from their own defaults
    (``strategies.get_strategy(name).default_config()``); the resolved config is
    stored with the model and its report.
    """

    # Each field's help is its documentation and its command-line flag's help: the CLI
    # derives its training flags from these fields (``--head-lr`` from ``head_lr``).
    epochs: int = _knob(10, "passes over the training images (gradient stages only)")
    batch_size: int = _knob(32, "images per optimisation step (and per inference batch)")
    head_lr: float = _knob(1e-3, "peak learning rate of the new head", alias="--lr")
    base_lr: float = _knob(1e-4, "peak learning rate of the topmost trainable backbone group")
    layer_decay: float = _knob(
        1.0, "each group further from the head gets base-lr * decay**distance"
    )
    weight_decay: float = _knob(0.01, "AdamW weight decay (not on norms and biases)")
    warmup_epochs: float = _knob(1.0, "linear warm-up (epochs) before the decay")
    schedule: str = _knob("cosine", "learning-rate schedule", choices=SCHEDULES)
    label_smoothing: float = _knob(0.1, "cross-entropy label smoothing")
    augment: bool = _knob(False, "random crops and flips (turns the feature cache off)")
    freeze_groups: int = _knob(
        -3, "freeze N layer groups from the input side (<0: leave the last -N trainable)"
    )
    bn_policy: str = _knob(
        "eval",
        "eval: no BatchNorm statistics move; train: those in trainable groups update",
        choices=BN_POLICIES,
    )
    lp_ft: bool = _knob(True, "fine-tune: fit the head on cached features first (LP-FT)")
    head: str = _knob("linear", "the new head: linear, or mlp (one hidden layer)", choices=HEADS)
    head_hidden: int = _knob(512, "width of the MLP head's hidden layer")
    dropout: float = _knob(0.0, "dropout before the head's last layer")
    probe_l2: float = _knob(1e-3, "L2 strength of the L-BFGS linear probe")
    class_weights: str = _knob(
        "auto",
        "balanced: weight the loss by inverse class frequency; auto: balanced when the "
        "largest training class holds 3x the smallest or more; none: unweighted",
        choices=CLASS_WEIGHTS,
    )
    validation_fraction: float = _knob(
        0.1, "share of the training images held out for early stopping"
    )
    patience: int = _knob(3, "stop after this many epochs without validation gain (0: never)")
    image_size: int | None = _knob(
        None, "input resolution in pixels (default: the backbone's own, 224 for lite0)"
    )
    layers: tuple[str, ...] = _knob(
        ("final",), "feature layers, e.g. final or stage-2,stage-1,final (stage-1: the last)"
    )
    seed: int = _knob(0, "one seed for the split, the draw, initialisation and shuffling")
    device: str = _knob("auto", "auto, cpu, cuda, cuda:N or mps")
    fast: bool = _knob(
        True, "channels_last, reduced precision and folded BatchNorm where they pay off"
    )
    num_workers: int = _knob(0, "DataLoader worker processes (0: decode inline)")

    def __post_init__(self) -> None:
        validate("TrainConfig", TRAIN_CONSTRAINTS, self)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again); unknown names are an error."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise invalid("TrainConfig", unknown[0], f"one of {sorted(known)}", changes[unknown[0]])
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["layers"] = list(self.layers)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "layers" in values:
            values["layers"] = tuple(values["layers"])
        return cls(**values)
