"""Training within a time budget: ``TrainingJob(budget="10m")``, ``headstart train
--budget 10m``.

The job loads the images, times a few of them through each option's network (see
`headstart.strategies.estimates`), and trains the option expected to be most accurate among
those whose estimate fits what is left of the budget. The order, from what
docs/BENCHMARKS.md measured on Fashion-MNIST (sections 3, 9c and 12):

1. an ensemble of frozen members, the more members the better (four: 87.1-87.6 % at
   100 labels per class, 9c), with the members the ranking picked in all three draws
   there (Lite1 240, Lite0 224, Lite2 260, Lite2 130 px, region-pooled layers) and then
   Lite1 120 and Lite0 112 px, so no budget goes to ranking;
2. fine-tuning Lite0 at 112 px, 8 epochs, then 4 (83.8-84.4 % at 100 per class,
   sections 3 and 12) - but below 50 labels per class it goes after feature extraction
   (68.6 against 73.6 % at 10 per class);
3. feature extraction (82.9-84.3 %), at the backbone's own size, then at half of it.

A named ``backbone`` keeps every option on it (an ensemble of it at its own size and
half); a named ``strategy`` keeps only that strategy's options (the budget then picks
its size and epochs). A fine-tune stops between epochs when the next would pass the
budget, keeping its best epoch; an ensemble's extraction drops, after any batch, the
members that would not finish at the pace measured (`headstart.estimator.ensemble_features`),
keeping the best ones (or the best alone); a single feature extraction and the test pass
cannot stop half-way, so their estimates (each pass timed twice, the slower kept) are
what keeps them inside.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from headstart.errors import ConfigError
from headstart.strategies.estimates import (
    Timer,
    ensemble_estimate,
    fit_estimate,
    format_seconds,
    json_seconds,
    parse_budget,
)
from headstart.train.callbacks import Callback

__all__ = ["BudgetOption", "parse_budget", "plan_options"]

# 9c's picks, best first, then the half sizes of the two backbones not yet at half
# (Lite1, the strongest, first): in 9c eight members (other sizes) added 0.2-0.3 points
# to four on three draws; these six, on the seed-0 draw of Fashion-MNIST k=100 (members'
# probabilities averaged), four 87.00 %, five 87.34 %, six 87.19 % (BENCHMARKS 15e, one
# draw: six ahead of five is not measured). With the fused fast path (BENCHMARKS 20)
# six fit 15 minutes there. The layers: the region-pooled set.
ENSEMBLE_MEMBERS = (
    ("tf_efficientnet_lite1", 240),
    ("tf_efficientnet_lite0", 224),
    ("tf_efficientnet_lite2", 260),
    ("tf_efficientnet_lite2", 130),
    ("tf_efficientnet_lite1", 120),
    ("tf_efficientnet_lite0", 112),
)
FINE_TUNE_EPOCHS = (8, 4)
FEW_LABELS = 50  # per class: below it fine-tuning is expected under feature extraction
SAFETY = 0.9  # an option fits when its estimate is at most this share of the time left


@dataclass
class BudgetOption:
    name: str
    strategy: str
    backbone: str
    image_size: int
    epochs: int | None = None
    members: tuple = ()  # (backbone, size, layers) for an ensemble
    steps: dict | None = None  # {step: (seconds, basis)}

    @property
    def seconds(self) -> float:
        return sum(s for s, _ in (self.steps or {}).values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "strategy": self.strategy,
            "backbone": self.backbone,
            "image_size": self.image_size,
            "epochs": self.epochs,
            "members": [f"{b} {s} px" for b, s, _ in self.members],
            "estimate_seconds": json_seconds(self.seconds),
            "steps": {k: json_seconds(s) for k, (s, _) in (self.steps or {}).items()},
        }


def plan_options(job: Any, config: Any, timer: Timer, n_test: int, per_class: int) -> list:
    """Every option for ``job``, most accurate expected first, each with its estimate.

    Timed cheapest first (feature extraction at the smaller size, then fine-tuning, then
    the ensembles, smallest first), so that when timing itself runs into the budget
    (``Timer.give_up_at``), or what is left is less than the cheapest option timed so far
    needs, the options left untimed are the ones that would not fit anyway."""
    from headstart.strategies.registry import get_strategy

    named = job.backbone if job.backbone != "auto" else None
    backbone = named or "tf_efficientnet_lite0"
    native = config.image_size or timer.native(backbone)
    tune, extract = [], []
    if job.strategy_given in (None, "feature-extraction"):
        base = get_strategy("feature-extraction").default_config().replace(**job.config_changes)
        for size in dict.fromkeys([native // 2, native] if not config.image_size else [native]):
            with timer.option(_cheapest(extract)):
                steps = fit_estimate(timer, "feature-extraction", backbone, size, base, n_test)
            extract.insert(0, BudgetOption("feature extraction", "feature-extraction", backbone,
                                           size, steps=steps))  # fmt: skip
    if job.strategy_given in (None, "fine-tune"):
        size = config.image_size or native // 2
        base = get_strategy("fine-tune").default_config().replace(**job.config_changes)
        for epochs in FINE_TUNE_EPOCHS:
            cfg = base.replace(epochs=min(epochs, base.epochs), image_size=size)
            with timer.option(_cheapest(extract + tune)):
                steps = fit_estimate(timer, "fine-tune", backbone, size, cfg, n_test)
            tune.append(BudgetOption(f"fine-tune {cfg.epochs} epochs", "fine-tune", backbone,
                                     size, epochs=cfg.epochs, steps=steps))  # fmt: skip
    options = _ensembles(job, config, timer, n_test, named, _cheapest(extract + tune))
    if per_class < FEW_LABELS:
        return options + extract + tune
    return options + tune + extract


def _cheapest(options: list) -> float:
    """The fewest seconds any of ``options`` (timed already) is estimated to need."""
    return min((o.seconds for o in options), default=0.0)


def _ensembles(
    job: Any, config: Any, timer: Timer, n_test: int, named: str | None, cheapest: float
) -> list:
    """The ensemble options, most members first (timed fewest first)."""
    from headstart.rank.ranking import SPATIAL_LAYERS

    if job.strategy_given not in (None, "feature-extraction"):
        return []
    if named is None:
        pool = list(ENSEMBLE_MEMBERS)
    else:
        native = config.image_size or timer.native(named)
        pool = [(named, native), (named, native // 2)] if not config.image_size else []
    options = []
    for k in range(2, len(pool) + 1):
        members = tuple((b, s, SPATIAL_LAYERS) for b, s in pool[:k])
        with timer.option(cheapest):
            steps = ensemble_estimate(timer, list(members), n_test)
        options.insert(0, BudgetOption(f"ensemble of {k}", "feature-extraction", "ensemble", 0,
                                       members=members, steps=steps))  # fmt: skip
    return options


def choose(options: list, budget: float, spent: float, callback: Callback) -> BudgetOption:
    """The first option (most accurate expected) that fits what is left; the plan, each
    option with its estimate, said first (also when none fits)."""
    left = budget - spent
    fits = [o for o in options if o.seconds <= left * SAFETY]
    winner = fits[0] if fits else None
    callback.on_note(
        f"budget {format_seconds(budget)} ({format_seconds(left)} left after loading and "
        "timing); the options, most accurate expected first (docs/BENCHMARKS.md 3, 9c):"
    )
    for option in options:
        mark = "chosen" if option is winner else ("fits" if option in fits else "too long")
        if option.seconds == math.inf:
            mark = "what was left after timing the others could not fit it"
        callback.on_note(f"  {_label(option):52} ~{format_seconds(option.seconds):>8}  {mark}")
    if winner is None:
        timed = [o for o in options if o.seconds < math.inf] or options
        smallest = min(timed, key=lambda o: o.seconds)
        raise ConfigError(
            f"{{budget}} {format_seconds(budget)} is too small for any option here: the "
            f"smallest, {_label(smallest)}, is estimated at {format_seconds(smallest.seconds)} "
            f"on this machine, and loading and timing took {format_seconds(spent)}. Give "
            f"{{budget}} at least {format_seconds((smallest.seconds / SAFETY + spent) * 1.05)}.",
            names_in_message=True,
        )
    above = options.index(winner)
    why = (
        f"the most accurate expected of those that fit; the {above} above it are expected "
        f"more accurate but do not fit in {SAFETY:.0%} of what is left"
        if above
        else "the most accurate expected, and it fits"
    )
    callback.on_note(f"chosen: {_label(winner)}: {why}")
    return winner


def _label(option: BudgetOption) -> str:
    if option.members:
        return f"{option.name} ({', '.join(f'{b[16:]} {s}' for b, s, _ in option.members)})"
    return f"{option.name} ({option.backbone} {option.image_size} px)"


def record(
    budget: float, winner: BudgetOption, options: list, actual: dict, cuts: list, started: float
) -> dict[str, Any]:
    """What headstart.json keeps of a budget: the options, the choice, each part's
    estimate and actual seconds, and what was cut."""
    return {
        "budget_seconds": budget,
        "chosen": winner.name,
        "options": [o.to_dict() for o in options],
        "parts": {
            step: {
                "estimate_seconds": round(winner.steps.get(step, (0.0, ""))[0], 3),
                "actual_seconds": round(seconds, 3),
            }
            for step, seconds in actual.items()
        },
        "cut": cuts,
        "total_seconds": round(time.monotonic() - started, 1),
    }
