"""A training job with a budget, step by step: load, time, choose (`headstart.job.budget`),
fit under a deadline, score, save with the budget's record in headstart.json."""

from __future__ import annotations

import time
from typing import Any

from headstart.job.budget import BudgetOption, choose, parse_budget, plan_options, record
from headstart.job.estimates import Timer
from headstart.job.steps import (
    _classifier,
    _diagnose,
    _evaluate_and_save,
    _split_seed,
    say_estimates,
)
from headstart.job.training import TrainingJob, TrainingResult
from headstart.train.callbacks import Callback
from headstart.train.config import TrainConfig
from headstart.train.deadline import deadline

__all__ = ["run_within_budget"]


def run_within_budget(
    job: TrainingJob, config: TrainConfig, callback: Callback, out: Any
) -> TrainingResult:
    """Load, time each option, train the most accurate expected that fits, stop at the
    budget (a fine-tune between epochs, keeping its best), score and save."""
    import numpy as np

    started = time.monotonic()
    budget = parse_budget(job.budget)
    train, test = job.load(_split_seed(job, config), callback)
    timer = Timer(train, job.weights, config.device)
    per_class = int(np.bincount(train.labels, minlength=len(train.classes)).min())
    options = plan_options(job, config, timer, len(test), per_class)
    winner = choose(options, budget, time.monotonic() - started, callback)
    _diagnose(train, test, callback)
    say_estimates(callback, winner.steps, last="test pass")
    test_estimate = winner.steps["test pass"][0]
    fit_started = time.monotonic()
    with deadline(budget - (fit_started - started) - test_estimate) as limit:
        clf, fitted = _fit(job, config, winner, train, callback, out)
    fit_seconds = time.monotonic() - fit_started
    say_estimates(callback, {"test pass": winner.steps["test pass"]})

    def budget_record(test_seconds: float) -> dict[str, Any]:
        parts = {"fit": fit_seconds, "test pass": test_seconds}
        made = record(budget, winner, options, parts, limit.cuts, started)
        fit_estimate = sum(s for k, (s, _) in winner.steps.items() if k != "test pass")
        made["parts"]["fit"]["estimate_seconds"] = round(fit_estimate, 3)
        made["setup_seconds"] = round(fit_started - started, 1)
        return made

    result = _evaluate_and_save(
        job, clf, (train, test), fitted, _name(winner), out, callback, None, budget_record
    )
    total = time.monotonic() - started
    over = f", {total / budget - 1:.0%} over" if total > budget else ""
    callback.on_note(f"budget: {total:.0f}s of {budget:.0f}s used{over}")
    return result


def _name(option: BudgetOption) -> str:
    return "ensemble" if option.members else option.backbone


def _fit(
    job: TrainingJob,
    config: TrainConfig,
    option: BudgetOption,
    train: Any,
    callback: Callback,
    out: Any,
) -> tuple[Any, TrainConfig]:
    """The chosen option, fitted: (classifier, its config)."""
    from headstart.estimator.ensemble import EnsembleMember, fit_ensemble
    from headstart.strategies.registry import get_strategy

    base = get_strategy(option.strategy).default_config().replace(**job.config_changes)
    if option.members:
        members = [EnsembleMember(b, s, tuple(layers)) for b, s, layers in option.members]
        ensemble_config = base.replace(layers=("final",))
        clf = fit_ensemble(
            train,
            members,
            combine=job.combine,
            weights=job.weights,
            config=ensemble_config,
            callback=callback,
        )
        return clf, ensemble_config
    fitted = base.replace(image_size=option.image_size)
    if option.epochs is not None:
        fitted = fitted.replace(epochs=option.epochs)
    clf = _classifier(job, option.backbone, fitted, callback, out, strategy=option.strategy)
    clf.prepare()
    clf.fit(train)
    return clf, fitted
