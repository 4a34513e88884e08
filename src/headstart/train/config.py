"""The training configuration: one frozen, validated dataclass, saved beside every model."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from headstart._internal.validation import (
    IMAGE_SIZE_RANGE,
    image_size_fits,
    invalid,
    is_finite_number,
    is_layer_name,
)

__all__ = ["BN_POLICIES", "HEADS", "SCHEDULES", "TrainConfig"]

# BN layers in frozen groups are always held in eval mode. The policy decides the rest:
# "eval": every BN layer stays in eval mode: running statistics never move; the
#         scale and shift of trainable groups still learn (the Keras guide's advice,
#         and what keeps a linear probe's head valid once fine-tuning starts);
# "train": BN layers in trainable groups update their statistics (training from scratch).
BN_POLICIES = ("eval", "train")

SCHEDULES = ("cosine", "onecycle")
HEADS = ("linear", "mlp")
CLASS_WEIGHTS = ("none", "balanced")


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
        "none", "balanced: weight the loss by inverse class frequency", choices=CLASS_WEIGHTS
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
        owner = "TrainConfig"
        numbers = ("head_lr", "base_lr", "layer_decay", "weight_decay", "warmup_epochs")
        for name in (*numbers, "label_smoothing", "dropout", "validation_fraction", "probe_l2"):
            value = getattr(self, name)
            if not is_finite_number(value):
                raise invalid(owner, name, "a finite number", value)
        positive_ints = ("epochs", "batch_size", "head_hidden")
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise invalid(owner, name, "an int >= 1", value)
        for name in ("head_lr", "base_lr"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0:
                raise invalid(owner, name, "> 0", value)
        if not 0 < self.layer_decay <= 1:
            raise invalid(owner, "layer_decay", "in (0, 1]", self.layer_decay)
        for name in ("weight_decay", "warmup_epochs", "probe_l2"):
            if not getattr(self, name) >= 0:
                raise invalid(owner, name, ">= 0", getattr(self, name))
        if not 0 <= self.label_smoothing < 1:
            raise invalid(owner, "label_smoothing", "in [0, 1)", self.label_smoothing)
        if not 0 <= self.dropout < 1:
            raise invalid(owner, "dropout", "in [0, 1)", self.dropout)
        if not 0 <= self.validation_fraction < 1:
            raise invalid(owner, "validation_fraction", "in [0, 1)", self.validation_fraction)
        if not isinstance(self.patience, int) or self.patience < 0:
            raise invalid(owner, "patience", "an int >= 0", self.patience)
        if self.schedule not in SCHEDULES:
            raise invalid(owner, "schedule", f"one of {SCHEDULES}", self.schedule)
        if self.head not in HEADS:
            raise invalid(owner, "head", f"one of {HEADS}", self.head)
        if self.bn_policy not in BN_POLICIES:
            raise invalid(owner, "bn_policy", f"one of {BN_POLICIES}", self.bn_policy)
        if self.class_weights not in CLASS_WEIGHTS:
            raise invalid(owner, "class_weights", f"one of {CLASS_WEIGHTS}", self.class_weights)
        if self.image_size is not None and not image_size_fits(self.image_size):
            raise invalid(
                owner,
                "image_size",
                f"{IMAGE_SIZE_RANGE}, or unset for the backbone's own size",
                self.image_size,
            )
        if not isinstance(self.layers, tuple) or not self.layers:
            raise invalid(
                owner, "layers", "one or more layer names, e.g. final or stage-2,final", self.layers
            )
        if not isinstance(self.seed, int) or self.seed < 0:
            raise invalid(owner, "seed", "an int >= 0", self.seed)
        if not isinstance(self.device, str) or not (
            self.device in ("auto", "cpu", "mps", "cuda") or self.device.startswith("cuda:")
        ):
            raise invalid(owner, "device", "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'", self.device)
        for layer in self.layers:
            if not is_layer_name(layer):
                raise invalid(
                    owner, "layers", "names such as 'final', 'stage4', 'stage-1' or 'final_2x2'",
                    layer,
                )  # fmt: skip
        if not isinstance(self.freeze_groups, int) or isinstance(self.freeze_groups, bool):
            raise invalid(owner, "freeze_groups", "an int", self.freeze_groups)
        if not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise invalid(owner, "num_workers", "an int >= 0", self.num_workers)

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
