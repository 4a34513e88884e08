"""A comparison within a time budget: ``compare(..., budget="10m")``, ``headstart compare
DATA --budget 10m``.

Before any run trains, every run the comparison plans is estimated on this machine and
these images, by the same timed passes as ``train --budget``
(`headstart.strategies.estimates`), and the plan is said: each run with its estimate,
whether it fits. The runs are taken most informative first:

1. the first seed before the others (more seeds narrow a spread, they do not add a row);
2. the largest draw first (what you would train on: "which strategy, here?"), then the
   smallest (what transfer buys with few labels), then the others, largest first;
3. every strategy at a size before the next size, in the order given, so the budget
   keeps strategies side by side rather than one strategy's whole curve.

In that order a run is kept when its estimate fits in ``SAFETY`` of what the runs kept
before it leave; one that does not is skipped (a cheaper one after it may still fit)
and named, with its estimate, in the results' notes. While the comparison runs, each
run is checked again before it starts, against the time left and the pace measured so
far (actual over estimated seconds of the runs done, when above 1), and skipped if it
no longer fits; it then trains under a deadline (`headstart.train.deadline`), so a
fine-tune or scratch run stops between epochs at the budget, keeps its best epoch, and
its row says so. Finished rows are kept whatever is cut after them.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from headstart.data.dataset import ImageDataset
from headstart.errors import ConfigError
from headstart.strategies.estimates import (
    BUDGET_TIMINGS,
    Timer,
    fit_estimate,
    format_seconds,
    json_seconds,
    parse_budget,
)
from headstart.strategies.registry import get_strategy
from headstart.train.callbacks import Callback
from headstart.train.deadline import deadline

__all__ = ["ComparisonBudget", "informative_first"]

SAFETY = 0.9  # a run fits when its estimate is at most this share of the time left


@dataclass
class BudgetedRun:
    """One run of the comparison as the budget sees it."""

    entry: tuple  # (labels per class, seed, strategy, backbone), as compare plans it
    id: str
    steps: dict[str, tuple[float, str]] = field(default_factory=dict)  # {step: (s, basis)}
    reused: bool = False
    status: str = "planned"  # then: skipped, ran, cut (stopped at the budget), reused
    actual_seconds: float | None = None

    @property
    def seconds(self) -> float:
        return 0.0 if self.reused else sum(s for s, _ in self.steps.values())


def informative_first(plan: Sequence[tuple], settings: Any) -> list[tuple]:
    """``plan``'s (k, seed, strategy, backbone) entries, most informative first (see the
    module's docstring)."""
    sizes = sorted({k for k, *_ in plan}, key=lambda k: float("inf") if k is None else k)
    by_size = [sizes[-1], *([sizes[0]] if len(sizes) > 1 else []), *sizes[-2:0:-1]]
    seeds, strategies = list(settings.seeds), list(settings.strategies)
    backbones = list(settings.compared_backbones)

    def key(entry: tuple) -> tuple[int, ...]:
        k, seed, strategy, backbone = entry
        rank = (seeds.index(seed), by_size.index(k))
        return (*rank, strategies.index(strategy), backbones.index(backbone))

    return sorted(plan, key=key)


class ComparisonBudget:
    """The budget of one ``compare`` call: the plan said first, then each run admitted
    or skipped, and a record for results.json."""

    def __init__(self, budget: Any, callback: Callback) -> None:
        self.seconds = parse_budget(budget)
        self.started = time.monotonic()
        self.callback = callback
        self.runs: dict[str, BudgetedRun] = {}
        self.notes: list[str] = []

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.started)

    def plan(
        self,
        entries: Sequence[tuple[tuple, str, bool]],
        train: ImageDataset,
        test: ImageDataset,
        settings: Any,
    ) -> None:
        """Estimate every (entry, id, reused) in order, keep the runs that fit, say the
        plan; a ConfigError naming the smallest run when nothing would run at all."""
        device = settings.config_for(settings.strategies[0], 0).device
        timer = Timer(train, settings.weights, device, timings=BUDGET_TIMINGS,
                      ceiling=self.seconds, give_up_at=self.started + self.seconds)  # fmt: skip
        for entry, rid, reused in entries:
            run = BudgetedRun(entry, rid, reused=reused)
            if not reused:
                with timer.option():
                    run.steps = _estimate(timer, entry, train, test, settings)
            self.runs[rid] = run
        left = self.left()
        room = left * SAFETY
        for run in self.runs.values():
            if run.reused:
                run.status = "reused"
            elif run.seconds <= room:
                room -= run.seconds
            else:
                run.status = "skipped"
        self._say_plan(left)
        if all(r.status == "skipped" for r in self.runs.values()) and self.runs:
            timed = [r for r in self.runs.values() if r.seconds < math.inf]
            smallest = min(timed or self.runs.values(), key=lambda r: r.seconds)
            spent = self.seconds - left
            raise ConfigError(
                f"{{budget}} {format_seconds(self.seconds)} is too small for any run of this "
                f"comparison: the smallest, {smallest.id}, is estimated at "
                f"{format_seconds(smallest.seconds)} on this machine, and timing took "
                f"{format_seconds(spent)}. Give {{budget}} at least "
                f"{format_seconds((smallest.seconds / SAFETY + spent) * 1.05)}, or compare "
                "fewer strategies or sizes.",
                names_in_message=True,
            )
        for run in self.runs.values():
            if run.status == "skipped" and run.seconds == math.inf:
                self.notes.append(f"{run.id} skipped for the budget: not timed, the budget "
                                  "was spent timing the runs before it")  # fmt: skip
            elif run.status == "skipped":
                self.notes.append(
                    f"{run.id} skipped for the budget: estimated {format_seconds(run.seconds)}, "
                    "more than was left after the runs before it"
                )

    def _say_plan(self, left: float) -> None:
        self.callback.on_note(
            f"budget {format_seconds(self.seconds)} ({format_seconds(left)} left after "
            "timing); the runs, most informative first:"
        )
        for run in self.runs.values():
            mark = {"planned": "runs", "skipped": "skipped: too long"}.get(run.status, run.status)
            if run.seconds == math.inf:
                mark = "skipped: the budget was spent timing the runs before it"
            estimate = "" if run.reused else f"~{format_seconds(run.seconds)}"
            self.callback.on_note(f"  {run.id:44} {estimate:>10}  {mark}")

    def pace(self) -> float:
        """Actual over estimated seconds of the runs trained so far, at least 1."""
        done = [r for r in self.runs.values() if r.actual_seconds is not None]
        estimated = sum(r.seconds for r in done)
        actual = sum(r.actual_seconds or 0.0 for r in done)
        return max(1.0, actual / estimated) if estimated > 0 else 1.0

    def admit(self, rid: str) -> bool:
        """Whether run ``rid`` trains now: planned, and its estimate, at the pace measured
        so far, still fits in what is left. Its estimates are said before it starts."""
        run = self.runs[rid]
        if run.status != "planned":
            return False
        pace, left = self.pace(), self.left()
        if run.seconds * pace > left * SAFETY:
            run.status = "skipped"
            at = f" at the pace measured so far ({pace:.1f}x the estimates)" if pace > 1 else ""
            self.notes.append(
                f"{rid} skipped at the budget: estimated {format_seconds(run.seconds * pace)}"
                f"{at}, {format_seconds(max(left, 0.0))} left"
            )
            self.callback.on_note(self.notes[-1])
            return False
        for step, (seconds, basis) in run.steps.items():
            self.callback.on_estimate(f"{rid} {step}", seconds * pace, basis)
        return True

    @contextlib.contextmanager
    def limit(self, rid: str, record: dict[str, Any]) -> Iterator[None]:
        """Run ``rid``'s fit inside: it stops between epochs where the budget, less its
        test pass, would end; ``record`` gets what was cut."""
        run = self.runs[rid]
        test = run.steps.get("test pass", (0.0, ""))[0] * self.pace()
        started = time.monotonic()
        with deadline(max(self.left() - test, 0.0)) as limit:
            yield
        run.actual_seconds = time.monotonic() - started
        run.status = "cut" if limit.cuts else "ran"
        if limit.cuts:
            record["cut"] = list(limit.cuts)
            self.notes += [f"{rid}: {cut}" for cut in limit.cuts]

    def record(self) -> dict[str, Any]:
        """What results.json keeps: the budget, each run's estimate, status and time."""
        return {
            "budget_seconds": self.seconds,
            "order": list(self.runs),
            "runs": {
                rid: {
                    "status": r.status,
                    "estimate_seconds": json_seconds(r.seconds),
                    **({"actual_seconds": round(r.actual_seconds, 2)} if r.actual_seconds else {}),
                }
                for rid, r in self.runs.items()
            },
            "total_seconds": round(time.monotonic() - self.started, 1),
        }


def _estimate(
    timer: Timer, entry: tuple, train: ImageDataset, test: ImageDataset, settings: Any
) -> dict[str, tuple[float, str]]:
    """{step: (seconds, basis)} of one run: its draw's images (and the images left over
    as unlabelled ones, for a strategy that uses them), at its size."""
    k, seed, strategy, backbone = entry
    config = settings.config_for(strategy, seed)
    drawn = len(train) if k is None else k * len(train.classes)
    images = len(train) if get_strategy(strategy).uses_unlabelled else drawn
    size = config.image_size or timer.native(backbone)
    return fit_estimate(timer, strategy, backbone, size, config, len(test), images)
