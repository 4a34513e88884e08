"""The training configuration: one frozen, validated dataclass, saved beside every model."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

from headstart._internal.validation import LAYER_PATTERN, invalid

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


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a training run. Strategies start from their own defaults
    (``strategies.get_strategy(name).default_config()``); the resolved config is
    stored with the model and its report.
    """

    epochs: int = 10  # passes over the training images (gradient stages only)
    batch_size: int = 32  # images per optimisation step
    head_lr: float = 1e-3  # peak learning rate of the new head
    base_lr: float = 1e-4  # peak learning rate of the topmost trainable backbone group
    layer_decay: float = 1.0  # each group further from the head gets base_lr * decay**distance
    weight_decay: float = 0.01  # AdamW decoupled weight decay (not applied to norms and biases)
    warmup_epochs: float = 1.0  # linear warm-up before the cosine decay
    schedule: str = "cosine"  # "cosine" (warm-up + cosine) or "onecycle"
    label_smoothing: float = 0.1  # cross-entropy label smoothing
    augment: bool = False  # random resized crop + flip: disables the feature cache
    freeze_groups: int = -3  # fine-tune: >=0 freezes that many groups from the input side,
    # <0 leaves that many body groups trainable at the top
    bn_policy: str = "eval"  # "eval": no BatchNorm statistics move; "train": those in trainable
    # groups update (BatchNorm in frozen groups never moves)
    lp_ft: bool = True  # fine-tune: fit the head on cached features first (linear probe)
    head: str = "linear"  # "linear" or "mlp" (one hidden layer)
    head_hidden: int = 512  # width of the MLP head's hidden layer
    dropout: float = 0.0  # dropout before the head's last layer
    probe_l2: float = 1e-3  # L2 strength of the L-BFGS linear probe on standardised features
    class_weights: str = "none"  # "balanced": weight the loss by inverse class frequency
    validation_fraction: float = 0.1  # carved from the training set when no validation is given
    patience: int = 3  # stop after this many epochs without validation gain; 0 disables
    image_size: int | None = None  # input resolution; None keeps the backbone's own
    layers: tuple[str, ...] = ("final",)  # feature-extraction: which features feed the head
    seed: int = 0  # one seed for splits, initialisation, shuffling and augmentation
    device: str = "auto"  # "auto", "cpu", "cuda", "mps"
    fast: bool = True  # channels_last, reduced precision (and, for frozen features,
    # BatchNorm folded into the convolutions) where it pays off
    num_workers: int = 0  # DataLoader worker processes in the training loop (0: decode inline)

    def __post_init__(self) -> None:
        owner = "TrainConfig"
        numbers = ("head_lr", "base_lr", "layer_decay", "weight_decay", "warmup_epochs")
        for name in (*numbers, "label_smoothing", "dropout", "validation_fraction", "probe_l2"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise invalid(owner, name, "a number", value)
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
        if self.image_size is not None and (
            not isinstance(self.image_size, int) or self.image_size < 16
        ):
            raise invalid(owner, "image_size", "None or an int >= 16", self.image_size)
        if not isinstance(self.layers, tuple) or not self.layers:
            raise invalid(owner, "layers", "a non-empty tuple such as ('final',)", self.layers)
        if not isinstance(self.seed, int) or self.seed < 0:
            raise invalid(owner, "seed", "an int >= 0", self.seed)
        if not isinstance(self.device, str) or not (
            self.device in ("auto", "cpu", "mps", "cuda") or self.device.startswith("cuda:")
        ):
            raise invalid(owner, "device", "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'", self.device)
        for layer in self.layers:
            is_stage = isinstance(layer, str) and LAYER_PATTERN.fullmatch(layer) is not None
            if layer != "final" and not is_stage:
                raise invalid(
                    owner, "layers", "names such as 'final', 'stage4' or 'stage-1'", layer
                )
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
