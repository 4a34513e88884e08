"""What every command shares: exit codes, the printing callback, the load report lines."""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any

from headstart._internal.text import printable
from headstart.cli.progress import ProgressPrinter
from headstart.train.callbacks import Callback
from headstart.train.config import TrainConfig

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130

# How the command line words what a library hint names besides its flags' own dests.
_CLI_WORDS = {
    "balanced_class_weights": "--class-weights balanced",
    "no_class_weights": "--class-weights none",
    "model_folder": "a folder written by `headstart train --out`",
    "unlabelled_images": "--unlabelled DIR",
    "k": "--labels-per-class",
    "list_backbones": "`headstart backbones`",
    "check_data": "`headstart check DATA`",
    "all_findings": "all in check.json, written with --out DIR",
}


def cli_words(command: argparse.ArgumentParser | None) -> dict[str, str]:
    """The library's parameter names spelled as ``command``'s flags (``max_bad_fraction``
    -> ``--max-bad-fraction``), so an error speaks the CLI's words on the CLI. Training
    settings are spelled as their flags in every command (one vocabulary), also where a
    command does not take them (the demo's plan still says ``--head-lr``)."""
    words = {f.name: "--" + f.name.replace("_", "-") for f in fields(TrainConfig)}
    words.update(_CLI_WORDS)
    for action in command._actions if command is not None else ():
        flag = next((o for o in action.option_strings if o.startswith("--")), None)
        if flag is not None:  # the first long form: --head-lr (not --lr), --lp-ft
            words[action.dest] = flag
    return words


class PrintingCallback(Callback):
    """Prints the plan, stages, progress and one line per epoch; for a training job also
    its notes, load reports, ranking, the doctor's brief (about ``data``) and result."""

    def __init__(self, words: dict[str, str] | None = None, *, data: str = "DATA") -> None:
        self._progress: dict[str, ProgressPrinter] = {}
        self.words = words or {}  # the command's flags, for the settings plan notes name
        self.data = data  # the folder the doctor's brief points `headstart check` at

    def on_plan(self, plan: Any) -> None:
        print(plan.format(self.words), flush=True)

    def on_stage(self, name: str, detail: str) -> None:
        print(printable(f"{name}: {detail}"), flush=True)  # details may name folders

    def on_progress(self, label: str, done: int, total: int) -> None:
        self._show(label, done, total, "images")  # the library's long work: extraction

    def on_estimate(self, step: str, seconds: float, basis: str) -> None:
        from headstart.job.estimates import format_seconds

        print(f"estimate: {step} ~{format_seconds(seconds)} on this machine ({basis})", flush=True)

    def on_step(self, epoch: int, step: int, steps: int, loss: float) -> None:
        self._show(f"epoch {epoch}", step, steps, "steps")

    def _show(self, label: str, done: int, total: int, unit: str) -> None:
        printer = self._progress.get(label)
        if printer is None or printer.finished or done < printer.done:  # a new pass
            if printer is not None:
                printer.close()
            printer = self._progress[label] = ProgressPrinter(label, unit)
        printer(done, total)

    def on_epoch(self, record: Any) -> None:
        val = ""
        if record.val_accuracy is not None:
            val = f", val loss {record.val_loss:.3f}, val acc {record.val_accuracy:.1%}"
        print(
            f"{record.stage} epoch {record.epoch}: train loss {record.train_loss:.3f}, "
            f"train acc {record.train_accuracy:.1%}{val} ({record.seconds:.1f}s)",
            flush=True,
        )

    def on_note(self, text: str) -> None:
        print(printable(text), flush=True)

    def on_dataset(self, label: str, dataset: Any) -> None:
        # A job's imbalance is said by its plan, of the images that train (class weights).
        print_report(label, dataset, self.words, imbalance=False)

    def on_data(self, train: Any, test: Any) -> None:
        shown = ", ".join(train.classes[:6]) + (", ..." if len(train.classes) > 6 else "")
        self.on_note(
            f"data: {len(train)} training and {len(test)} test images, "
            f"{len(train.classes)} classes ({shown})"
        )

    def on_ranking(self, ranking: Any, top: int) -> None:
        print(printable(ranking.format(top=top, words=self.words), keep_newlines=True))

    def on_diagnosis(self, diagnosis: Any, said: tuple[str, ...]) -> None:
        for line in diagnosis.brief(self.data, skip=said, words=self.words):
            print(line)

    def on_job_end(self, result: Any) -> None:
        m = result.metrics
        print(
            f"test balanced accuracy {m['balanced_accuracy']:.1%} (mean recall over the "
            f"classes), accuracy {m['accuracy']:.1%}, on {m['n']} test images"
        )
        if result.folder is not None:
            print(f"model saved to {result.folder}/ (model.safetensors, headstart.json)")


def print_reports(train: Any, test: Any, words: dict[str, str] | None = None) -> None:
    """The load report of a train/test pair: once for a set split in two, else each."""
    if train.report is test.report or train.report.source == test.report.source:
        print_report("data", train, words, imbalance=False)
        print_imbalance("training split", train)
    else:
        print_report("train", train, words)
        print_report("test", test, words)


def print_report(
    label: str, dataset: Any, words: dict[str, str] | None = None, *, imbalance: bool = True
) -> None:
    """What loading skipped or converted, and (``imbalance``) a class imbalance of these
    images, in a few lines; ``words`` spell the settings a skip reason names."""
    report = dataset.report
    if report.skipped or report.rotated or report.converted:
        print(f"{label}: {report.summary(words)}")
    if imbalance:
        print_imbalance(label, dataset)


def print_imbalance(label: str, dataset: Any) -> None:
    """One line when the largest class of ``dataset`` (``label`` says which images those
    are) holds ``IMBALANCE_RATIO`` times the smallest or more, as the doctor warns."""
    from headstart.data.findings import IMBALANCE_RATIO

    counts = dataset.class_counts()
    smallest, largest = min(counts.values()), max(counts.values())
    if smallest and largest / smallest >= IMBALANCE_RATIO:
        print(
            f"{label}: classes are imbalanced ({smallest} to {largest} images per class); "
            "read the balanced accuracy"
        )


def load_model(args: argparse.Namespace, *, cached: bool = False) -> tuple[Any, dict[str, Any]]:
    """The model ``args.model`` names, for ``--runtime``, and the keyword arguments its
    predictions take: a model folder run by PyTorch (an ``ImageClassifier``, told its
    ``device``), or an exported ``.onnx`` file run by ONNX Runtime (an
    ``OnnxClassifier``; this path never imports torch). A folder under ``--runtime
    onnx`` means the ``model.onnx`` that `headstart export` wrote into it. ``cached``:
    the PyTorch model may use the feature cache (``--cache-dir``, ``--no-cache``)."""
    from pathlib import Path

    from headstart.cli.arguments import check_batch_size
    from headstart.errors import ConfigError

    path = Path(args.model)
    onnx_file = path.suffix.lower() == ".onnx" and not path.is_dir()
    runtime = args.runtime if args.runtime != "auto" else ("onnx" if onnx_file else "torch")
    check_batch_size(args.batch_size)
    if runtime == "onnx":
        if args.device not in ("auto", "cpu"):
            raise ConfigError(
                f"--device {args.device} applies to --runtime torch; ONNX Runtime runs the "
                "model on the CPU here. Leave --device out."
            )
        from headstart.export.contract import check_exported_from
        from headstart.export.runtime import OnnxClassifier

        if path.is_dir():
            if not (path / "model.onnx").is_file():
                raise ConfigError(
                    f"--runtime onnx: {path} holds no model.onnx; write one with "
                    f"`headstart export {path}`, or give the .onnx file itself."
                )
            model = OnnxClassifier.load(path / "model.onnx")
            check_exported_from(model.card, path, model.path)  # not a stale export
            return model, {}
        return OnnxClassifier.load(path), {}
    if onnx_file:
        raise ConfigError(
            f"--runtime torch runs a model folder; {path} is an ONNX file (use --runtime onnx)."
        )
    from headstart.backbones.device import select_device
    from headstart.cli.arguments import cache_folder
    from headstart.estimator.image_classifier import ImageClassifier

    select_device(args.device)  # a device this machine lacks fails before any image loads
    cache_dir = cache_folder(args) if cached else None
    return ImageClassifier.load(args.model, cache_dir=cache_dir), {"device": args.device}


def join_world() -> bool:
    """Under torchrun, join the group and say whether this is rank 0, the one that prints
    and writes (the others' output goes nowhere); True in a world of one."""
    import os
    import sys

    from headstart.parallel import init_distributed

    if init_distributed().is_main:
        return True
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the rest of this process
    return False
