"""The steps of a training job, in order: load, (rank,) fit, evaluate, save.

`TrainingJob.run` checks the job and claims its out folder, then calls `run_job`; each
step is a function here, so that the order a run takes reads top to bottom."""

from __future__ import annotations

from typing import Any

from headstart.data.dataset import ImageDataset
from headstart.job.choices import (
    bundled_backbones,
    choose_by_ranking,
    choose_members,
    rank_images,
)
from headstart.job.estimates import PROBE_SHARE, Timer, ensemble_estimate, fit_estimate
from headstart.job.training import AUTO, TrainingJob, TrainingResult
from headstart.train.callbacks import Callback
from headstart.train.config import TrainConfig

__all__ = ["run_job"]

# The doctor's findings the load report already gave (skipped files, imbalance).
_SAID_BY_THE_LOAD_REPORT = ("unreadable", "imbalance")


def run_job(
    job: TrainingJob, config: TrainConfig, callback: Callback, out: Any
) -> TrainingResult | None:
    """The job after its checks, saving to ``out`` (a claimed ``ModelFolder``, or None).
    Returns None on a rank other than 0 of several processes, which neither evaluates
    nor saves."""
    callback.on_job_start(job.params(config))
    if job.budget is not None:
        from headstart.job.within_budget import run_within_budget

        return run_within_budget(job, config, callback, out)
    if job.ensemble is not None:
        return _run_ensemble(job, config, callback, out)
    backbone, ranking = job.backbone, None
    if job.backbone == AUTO or job.layers == AUTO:  # the choice needs the training images
        train, test = job.load(_split_seed(job, config), callback)
        ranking = _rank(job, config, train, callback, top=8)
        backbone, config = choose_by_ranking(ranking, config, callback)
    clf = _classifier(job, backbone, config, callback, out)
    clf.prepare()  # weights offline, layers or freeze groups it lacks: fail before data
    if ranking is None:
        train, test = job.load(_split_seed(job, config), callback)
    unlabelled = job.load_unlabelled(train, test, callback)
    _diagnose(train, test, callback)
    steps = _fit_estimates(job, job.strategy, backbone, config, train, len(test))
    say_estimates(callback, steps, last="test pass")
    clf.fit(train, unlabelled=unlabelled, resume=job.resume)
    say_estimates(callback, {"test pass": steps["test pass"]})
    if not job.close_group():
        return None
    return _evaluate_and_save(job, clf, (train, test), config, backbone, out, callback, ranking)


def _run_ensemble(
    job: TrainingJob, config: TrainConfig, callback: Callback, out: Any
) -> TrainingResult:
    """Rank, keep the top K distinct (backbone, size) candidates, fit them as one model."""
    from headstart.estimator.ensemble import fit_ensemble

    train, test = job.load(_split_seed(job, config), callback)
    ranking = _rank(job, config, train, callback, top=12)
    assert job.ensemble is not None
    members = choose_members(ranking, job.ensemble, callback)
    _diagnose(train, test, callback)
    timer = Timer(train, job.weights, config.device)
    sized = [(m.backbone, m.image_size or timer.native(m.backbone), m.layers) for m in members]
    steps = ensemble_estimate(timer, sized, len(test))
    say_estimates(callback, steps, last="test pass")
    clf = fit_ensemble(
        train, members, combine=job.combine, weights=job.weights, config=config, callback=callback
    )
    say_estimates(callback, {"test pass": steps["test pass"]})
    data = (train, test)
    return _evaluate_and_save(job, clf, data, config, "ensemble", out, callback, ranking)


def _split_seed(job: TrainingJob, config: TrainConfig) -> int:
    return config.seed if job.split_seed is None else job.split_seed


def _rank(
    job: TrainingJob, config: TrainConfig, train: ImageDataset, callback: Callback, top: int
) -> Any:
    """The ranking ``backbone="auto"``, ``layers="auto"`` and ``ensemble`` choose from:
    every bundled backbone for auto (else the one named), at the config's image size if
    set, every default layer set for ``layers="auto"`` (and for an ensemble not told
    its layers)."""
    rank_layers = job.layers == AUTO or (job.ensemble is not None and job.layers is None)
    _say_ranking_estimate(job, config, train, callback)
    return rank_images(
        train,
        config,
        backbones=None if job.backbone == AUTO else [job.backbone],
        rank_layers=rank_layers,
        weights=job.weights,
        cache_dir=_cache_dir(job),
        callback=callback,
        top=top,
    )


def _say_ranking_estimate(
    job: TrainingJob, config: TrainConfig, train: ImageDataset, callback: Callback
) -> None:
    """The ranking's time: the training images once through each (backbone, size) pair,
    each pair timed, + the probes' share."""
    timer = Timer(train, job.weights, config.device)
    names = bundled_backbones(Callback()) if job.backbone == AUTO else [job.backbone]
    pairs = [
        (name, size)
        for name in names
        for size in (
            [config.image_size]
            if config.image_size
            else [timer.native(name), timer.native(name) // 2]
        )  # fmt: skip
    ]
    each = sum(timer.extraction(name, size, ("final",)) for name, size in pairs)
    seconds = len(train) * each * (1 + PROBE_SHARE)
    basis = (
        f"{len(train)} images through {len(pairs)} backbone and size pairs, each timed, "
        f"+ {PROBE_SHARE:.0%} probes"
    )
    callback.on_estimate("ranking", seconds, basis)


def _fit_estimates(
    job: TrainingJob,
    strategy: str,
    backbone: str,
    config: TrainConfig,
    train: ImageDataset,
    n_test: int,
) -> dict[str, tuple[float, str]]:
    timer = Timer(train, job.weights, config.device)
    size = config.image_size or timer.native(backbone)
    return fit_estimate(timer, strategy, backbone, size, config, n_test)


def say_estimates(callback: Callback, steps: dict, last: str | None = None) -> None:
    """Each step's estimate through ``callback.on_estimate``, ``last`` left out (it is
    said when it starts)."""
    for step, (seconds, basis) in steps.items():
        if step != last:
            callback.on_estimate(step, seconds, basis)


def _cache_dir(job: TrainingJob) -> Any:
    from pathlib import Path

    return Path(job.cache_dir) if job.cache_dir is not None else None


def _classifier(
    job: TrainingJob,
    backbone: str,
    config: TrainConfig,
    callback: Callback,
    out: Any,
    strategy: str | None = None,
) -> Any:
    from headstart.estimator.image_classifier import ImageClassifier

    return ImageClassifier(
        backbone=backbone,
        strategy=strategy or job.strategy,
        config=config,
        weights=job.weights,
        cache_dir=_cache_dir(job),
        checkpoint_dir=out.checkpoints if out is not None else job.checkpoint_dir,
        callback=callback,
    )


def _diagnose(train: ImageDataset, test: ImageDataset, callback: Callback) -> None:
    """The data doctor's findings, for a brief (the load report gave skips and imbalance)."""
    from headstart.data.doctor import diagnose

    callback.on_diagnosis(diagnose(train, test), _SAID_BY_THE_LOAD_REPORT)


def _evaluate_and_save(
    job: TrainingJob,
    clf: Any,
    data: tuple[ImageDataset, ImageDataset],
    config: TrainConfig,
    backbone: str,
    out: Any,
    callback: Callback,
    ranking: Any,
    budget: Any = None,
) -> TrainingResult:
    """Score the test images, record (with ``budget(test_seconds)``, the budget's record
    for headstart.json) and save."""
    import time

    train, test = data
    callback.on_note(f"trained in {clf.fit_seconds_:.1f}s")
    started = time.monotonic()
    evaluation = clf.evaluate(test, batch_size=config.batch_size, device=config.device)
    if budget is not None:
        clf.budget_ = budget(time.monotonic() - started)
    metrics = {k: evaluation[k] for k in ("accuracy", "balanced_accuracy", "n")}
    source = job.source(_split_seed(job, config))
    clf.metrics_ = {"test": {**metrics, **({"data": source} if source else {})}}
    folder = out.save(clf) if out is not None else None
    result = TrainingResult(
        classifier=clf,
        metrics=clf.metrics_["test"],
        evaluation=evaluation,
        folder=folder,
        train=train,
        test=test,
        config=config,
        backbone=backbone,
        ranking=ranking,
    )
    callback.on_job_end(result)
    return result
