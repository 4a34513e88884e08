"""What a strategy is, and what it reports: its plan (per layer group: trainable or
frozen, parameters, learning rate; the BatchNorm policy), printed before it trains.

Light to import: the CLI reads strategy names and defaults without torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from headstart.errors import ConfigError, spell
from headstart.train.callbacks import Callback, EpochRecord
from headstart.train.config import TrainConfig

if TYPE_CHECKING:
    import torch

    from headstart.backbones.registry import Backbone
    from headstart.data.dataset import ImageDataset
    from headstart.features.cache import FeatureCache
    from headstart.train.network import Classifier
    from headstart.train.weighting import ClassWeighting

__all__ = ["FitContext", "FitResult", "Plan", "PlanRow", "Strategy"]


@dataclass(frozen=True)
class PlanRow:
    group: str
    parameters: int
    trainable: bool
    lr: float | None  # None for frozen groups, or for a head solved in closed form


@dataclass
class Plan:
    """What a strategy will train, printed before it does."""

    strategy: str
    rows: list[PlanRow]
    bn_policy: str
    stages: list[str]
    notes: list[str] = field(default_factory=list)  # settings written as {name}

    @property
    def trainable_parameters(self) -> int:
        return sum(r.parameters for r in self.rows if r.trainable)

    @property
    def total_parameters(self) -> int:
        return sum(r.parameters for r in self.rows)

    def format(self, words: Mapping[str, str] | None = None) -> str:
        """The plan as printed; ``words`` spell the settings its notes name."""
        lines = [f"plan: {self.strategy} ({' -> '.join(self.stages)})"]
        lines.append(f"  {'layer group':<28} {'params':>10}  {'state':<9} {'lr':>8}")
        for row in self.rows:
            state = "trainable" if row.trainable else "frozen"
            lr = f"{row.lr:.1e}" if row.lr is not None else "-"
            lines.append(f"  {row.group:<28} {row.parameters:>10,}  {state:<9} {lr:>8}")
        share = self.trainable_parameters / max(self.total_parameters, 1)
        lines.append(
            f"  trainable: {self.trainable_parameters:,} of {self.total_parameters:,} "
            f"parameters ({share:.1%})"
        )
        lines.append(f"  BatchNorm: {self.bn_policy}")
        lines.extend(f"  note: {spell(note, words)}" for note in self.notes)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "rows": [r.__dict__ for r in self.rows],
            "bn_policy": self.bn_policy,
            "stages": self.stages,
            "notes": [spell(note) for note in self.notes],
            "trainable_parameters": self.trainable_parameters,
            "total_parameters": self.total_parameters,
        }


@dataclass
class FitContext:
    backbone: Backbone  # its model has no classifier head (reset to 0 classes)
    train: ImageDataset
    validation: ImageDataset | None
    config: TrainConfig
    device: torch.device
    cache: FeatureCache | None
    checkpoint_dir: Path | None
    resume: bool
    callback: Callback
    run_key: str | None = None  # identifies config + backbone + weights + data for --resume
    unlabelled: ImageDataset | None = None  # images without labels (semi-supervised)
    weighting: ClassWeighting | None = None  # what config.class_weights came to, and why

    @property
    def num_classes(self) -> int:
        return len(self.train.classes)

    def announce(self, plan: Plan) -> None:
        """Hand the plan to the callback, with the class-weight decision's note."""
        note = self.weighting.note() if self.weighting is not None else None
        if note is not None:
            plan.notes.append(note)
        self.callback.on_plan(plan)

    def checkpoint(self, stage: str) -> Path | None:
        if self.checkpoint_dir is None:
            return None
        return Path(self.checkpoint_dir) / f"checkpoint-{stage}.pt"


@dataclass
class FitResult:
    model: Classifier
    history: list[EpochRecord]
    plan: Plan


class Strategy:
    """Base class: a name, defaults, and ``fit``."""

    name: str = ""
    summary: str = ""
    pretrained: bool = True  # scratch builds the backbone without weights
    uses_unlabelled: bool = False  # semi-supervised needs unlabelled images; others refuse them
    frozen_body: bool = False  # the backbone never trains: its cached features are the model's

    def default_config(self) -> TrainConfig:
        return TrainConfig()

    def unused_settings(self, config: TrainConfig) -> dict[str, str]:
        """The config fields this strategy would not read under ``config``, each with why
        (parameters written as ``{name}``), so that a face can refuse a setting the user
        gave instead of dropping it silently."""
        return {}

    def refuse_unused(self, config: TrainConfig, given: Iterable[str]) -> None:
        """A ConfigError for the first setting in ``given`` (names the user chose) that
        this strategy would ignore under ``config``: used or refused, never dropped."""
        unused = self.unused_settings(config)
        for name in given:
            if name in unused:
                raise ConfigError(
                    f"The {self.name} strategy would ignore a setting you gave.",
                    hint=f"{{{name}}} is not used: {unused[name]}. Leave it out.",
                )

    def fit(self, ctx: FitContext) -> FitResult:  # pragma: no cover - abstract
        raise NotImplementedError
