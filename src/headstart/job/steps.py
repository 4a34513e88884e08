"""The steps of a training job, in order: load, (rank,) fit, evaluate, save.

`TrainingJob.run` checks the job and claims its out folder, then calls `run_job`; each
step is a function here, so that the order a run takes reads top to bottom."""

from __future__ import annotations

from typing import Any

from headstart.data.dataset import ImageDataset
from headstart.job.choices import choose_by_ranking, choose_members, rank_images
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
    clf.fit(train, unlabelled=unlabelled, resume=job.resume)
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
    clf = fit_ensemble(
        train, members, combine=job.combine, weights=job.weights, config=config, callback=callback
    )
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


def _cache_dir(job: TrainingJob) -> Any:
    from pathlib import Path

    return Path(job.cache_dir) if job.cache_dir is not None else None


def _classifier(
    job: TrainingJob, backbone: str, config: TrainConfig, callback: Callback, out: Any
) -> Any:
    from headstart.estimator.image_classifier import ImageClassifier

    return ImageClassifier(
        backbone=backbone,
        strategy=job.strategy,
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
) -> TrainingResult:
    train, test = data
    callback.on_note(f"trained in {clf.fit_seconds_:.1f}s")
    evaluation = clf.evaluate(test, batch_size=config.batch_size, device=config.device)
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
