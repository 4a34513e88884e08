"""The training loop: bit-exact resume, no silent NaN, safe interrupts, atomic checkpoints.

Small on purpose: timm's ``test_efficientnet`` (~100k parameters) at 32 px on a few
dozen images, or a linear layer on random features when the loop alone is the subject.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fixtures_images import build_image_folder
from torch import nn
from torch.utils.data import TensorDataset

from headstart.cli import main
from headstart.data.arrays import from_arrays
from headstart.data.dataset import ImageDataset
from headstart.errors import TrainingError, TrainingInterrupted
from headstart.estimator.image_classifier import ImageClassifier
from headstart.strategies.registry import get_strategy
from headstart.train.callbacks import Callback, EpochRecord
from headstart.train.checkpoint import load_checkpoint, save_checkpoint
from headstart.train.config import TrainConfig
from headstart.train.loop import train_loop

BACKBONE = "test_efficientnet"


# ---------------------------------------------------------------------- helpers


def random_images(count: int, seed: int) -> ImageDataset:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    return from_arrays(images, np.arange(count) % 2)


def scratch_config(**changes: Any) -> TrainConfig:
    """Scratch defaults (augmentation on), shrunk: 4 epochs of 3 steps (8 + 8 + 4 images)."""
    return (
        get_strategy("scratch")
        .default_config()
        .replace(
            epochs=4,
            batch_size=8,
            patience=0,
            image_size=32,
            device="cpu",
            validation_fraction=0.0,
        )
        .replace(**changes)
    )


def fit(
    folder: Path,
    config: TrainConfig,
    train: ImageDataset,
    validation: ImageDataset | None = None,
    *,
    strategy: str = "scratch",
    callback: Callback | None = None,
    resume: bool = False,
) -> ImageClassifier:
    clf = ImageClassifier(
        BACKBONE,
        strategy,
        config,
        weights="none",
        checkpoint_dir=folder,
        callback=callback,
    )
    return clf.fit(train, validation, resume=resume)


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differ = [name for name in a if not torch.equal(a[name], b[name])]
    assert not differ, f"tensors differ after resume: {differ[:5]}"


def tensors_in(value: Any) -> Iterator[torch.Tensor]:
    """Every tensor inside a checkpoint (nested dicts, lists, tuples)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from tensors_in(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from tensors_in(item)


def losses(history: list[dict[str, Any]]) -> list[tuple[int, float, float]]:
    return [(r["epoch"], r["train_loss"], r["train_accuracy"]) for r in history]


class Killed(Exception):
    """Stands in for the process dying: nothing after it runs."""


class Recorder(Callback):
    """Records (stage, epoch) and (epoch, step); optionally kills or interrupts the run."""

    def __init__(
        self,
        kill_after_epoch: tuple[str, int] | None = None,
        sigint_at_step: tuple[int, int] | None = None,
    ) -> None:
        self.kill_after_epoch = kill_after_epoch
        self.sigint_at_step = sigint_at_step
        self.epochs: list[tuple[str, int]] = []
        self.steps: list[tuple[int, int]] = []

    def on_step(self, epoch: int, step: int, steps: int, loss: float) -> None:
        self.steps.append((epoch, step))
        if (epoch, step) == self.sigint_at_step:
            os.kill(os.getpid(), signal.SIGINT)  # the loop's handler only sets a flag

    def on_epoch(self, record: EpochRecord) -> None:
        self.epochs.append((record.stage, record.epoch))
        if (record.stage, record.epoch) == self.kill_after_epoch:
            raise Killed


# ------------------------------------------------------------ kill and resume


def test_killed_after_an_epoch_resumes_to_identical_weights(tmp_path: Path) -> None:
    train = random_images(20, seed=0)
    config = scratch_config(dropout=0.2)
    reference = fit(tmp_path / "a", config, train)

    with pytest.raises(Killed):
        fit(tmp_path / "b", config, train, callback=Recorder(kill_after_epoch=("scratch", 2)))
    saved = load_checkpoint(tmp_path / "b" / "checkpoint-scratch.pt")
    assert saved is not None and saved["step"] == 0 and 1 <= saved["epoch"] < 4

    after = Recorder()
    resumed = fit(tmp_path / "b", config, train, callback=after, resume=True)

    # It resumed: only the epochs the checkpoint lacked ran again.
    assert after.epochs == [("scratch", e) for e in range(saved["epoch"] + 1, 5)]
    assert_same_tensors(reference.model_.state_dict(), resumed.model_.state_dict())
    assert losses(resumed.history_) == losses(reference.history_)


def test_interrupted_mid_epoch_resumes_to_identical_weights(tmp_path: Path) -> None:
    """SIGINT inside epoch 2: the resumed run starts at its step 3 and ends bit-identical.

    Augmentation and dropout draw from both RNGs, so this fails unless the loop restores
    them and consumes nothing extra from them on the way back in.
    """
    train, validation = random_images(20, seed=0), random_images(6, seed=1)
    config = scratch_config(dropout=0.2)
    reference = fit(tmp_path / "a", config, train, validation)

    before = Recorder(sigint_at_step=(2, 2))
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as interrupted:
        fit(tmp_path / "b", config, train, validation, callback=before)
    checkpoint = tmp_path / "b" / "checkpoint-scratch.pt"
    assert interrupted.value.checkpoint == checkpoint
    assert "epoch 2, step 2" in str(interrupted.value) and str(checkpoint) in str(interrupted.value)
    assert before.steps[-1] == (2, 2)
    saved = load_checkpoint(checkpoint)
    assert (saved["epoch"], saved["step"]) == (1, 2)  # 0-based epoch, steps done in it
    assert signal.getsignal(signal.SIGINT) is handler  # the loop put it back

    after = Recorder()
    resumed = fit(tmp_path / "b", config, train, validation, callback=after, resume=True)

    assert after.steps[0] == (2, 3)
    assert after.epochs == [("scratch", e) for e in (2, 3, 4)]
    assert losses(resumed.history_) == losses(reference.history_)
    assert_same_tensors(reference.model_.state_dict(), resumed.model_.state_dict())
    # The kept model is the best validation epoch; the last epoch's weights, optimizer
    # moments and RNG states live in the final checkpoints and must agree as well.
    final_a = load_checkpoint(tmp_path / "a" / "checkpoint-scratch.pt")
    final_b = load_checkpoint(checkpoint)
    assert_same_tensors(final_a["model"], final_b["model"])
    moments = zip(tensors_in(final_a["optimizer"]), tensors_in(final_b["optimizer"]), strict=True)
    assert all(torch.equal(a, b) for a, b in moments)
    assert torch.equal(final_a["torch_rng"], final_b["torch_rng"])
    assert final_a["python_rng"] == final_b["python_rng"]


def test_fine_tune_killed_in_its_second_stage_resumes_to_identical_weights(
    tmp_path: Path,
) -> None:
    """LP-FT with an MLP head: the finished head stage is restored, fine-tuning resumed."""
    train = random_images(20, seed=0)
    config = (
        get_strategy("fine-tune")
        .default_config()
        .replace(
            epochs=3,
            batch_size=8,
            patience=0,
            image_size=32,
            device="cpu",
            validation_fraction=0.0,
            head="mlp",
            head_hidden=16,
            augment=True,
        )
    )
    reference = fit(tmp_path / "a", config, train, strategy="fine-tune")

    kill = Recorder(kill_after_epoch=("fine-tune", 2))
    with pytest.raises(Killed):
        fit(tmp_path / "b", config, train, strategy="fine-tune", callback=kill)
    assert load_checkpoint(tmp_path / "b" / "checkpoint-head.pt")["epoch"] == 30  # finished
    saved = load_checkpoint(tmp_path / "b" / "checkpoint-fine-tune.pt")["epoch"]
    assert 1 <= saved < 3

    after = Recorder()
    resumed = fit(tmp_path / "b", config, train, strategy="fine-tune", callback=after, resume=True)

    assert after.epochs == [("fine-tune", e) for e in range(saved + 1, 4)]  # no head epochs
    assert_same_tensors(reference.model_.state_dict(), resumed.model_.state_dict())
    assert losses(resumed.history_) == losses(reference.history_)


# ------------------------------------------------------- the loop on a tiny model


def features(count: int = 32) -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(count, 8, generator=generator), torch.arange(count) % 3)


def linear_model() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(8, 3)


def linear_loop(
    checkpoint: Path,
    *,
    model: nn.Module | None = None,
    stage: str = "head",
    resume: bool = False,
    **kwargs: Any,
):
    """Three epochs of four steps for a linear layer; returns (model, outcome)."""
    model = model or linear_model()
    config = TrainConfig(epochs=3, batch_size=8, patience=0, fast=False, device="cpu")
    outcome = train_loop(
        model,
        features(),
        None,
        param_groups=[{"params": list(model.parameters()), "lr": 0.05}],
        config=config,
        stage=stage,
        checkpoint=checkpoint,
        resume=resume,
        **kwargs,
    )
    return model, outcome


def assert_all_finite(state: dict[str, Any]) -> None:
    found = list(tensors_in(state))
    assert found
    for tensor in found:
        assert not tensor.is_floating_point() or torch.isfinite(tensor).all()


@pytest.mark.parametrize("poison", [float("inf"), float("nan")])
def test_non_finite_loss_stops_before_the_step_and_keeps_a_finite_checkpoint(
    tmp_path: Path, poison: float
) -> None:
    checkpoint = tmp_path / "checkpoint-head.pt"
    seen: list[tuple[int, int]] = []

    def hook(loss: torch.Tensor, epoch: int, step: int) -> torch.Tensor:
        seen.append((epoch, step))
        return loss * poison if (epoch, step) == (1, 2) else loss

    recorder = Recorder()
    with pytest.raises(TrainingError) as stopped:
        linear_loop(checkpoint, loss_hook=hook, callback=recorder)

    message = str(stopped.value)
    assert "epoch 2, step 3" in message  # both 1-based
    assert str(poison) in message and str(checkpoint) in message
    assert seen[-1] == (1, 2)  # stopped at once, no later step
    assert recorder.steps[-1] == (2, 2)  # the poisoned step never reached the optimizer
    saved = load_checkpoint(checkpoint)
    assert (saved["epoch"], saved["step"]) == (1, 0)
    assert_all_finite(saved)

    # The checkpoint left behind is a working one: resuming from it finishes the run.
    model, outcome = linear_loop(checkpoint, resume=True)
    assert outcome.resumed_from == (1, 0) and len(outcome.history) == 3
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_non_finite_loss_before_any_checkpoint_saves_nothing(tmp_path: Path) -> None:
    def hook(loss: torch.Tensor, epoch: int, step: int) -> torch.Tensor:
        return loss * float("inf") if (epoch, step) == (0, 1) else loss

    with pytest.raises(TrainingError, match=r"epoch 1, step 2") as stopped:
        linear_loop(tmp_path / "checkpoint-head.pt", loss_hook=hook)
    assert "checkpoint" not in str(stopped.value)  # there is none to point to
    assert list(tmp_path.iterdir()) == []


def test_weights_gone_non_finite_are_never_saved(tmp_path: Path) -> None:
    """NaN weights with a finite loss (here: planted after the last step of epoch 2)."""
    checkpoint = tmp_path / "checkpoint-head.pt"

    model = linear_model()

    class Poison(Callback):
        def on_step(self, epoch: int, step: int, steps: int, loss: float) -> None:
            if (epoch, step) == (2, steps):
                with torch.no_grad():
                    model.weight[0, 0] = float("nan")

    with pytest.raises(TrainingError, match="non-finite weights") as refused:
        linear_loop(checkpoint, model=model, callback=Poison())
    assert "weight" in str(refused.value) and str(checkpoint) in str(refused.value)
    saved = load_checkpoint(checkpoint)
    assert saved["epoch"] == 1  # epoch 2 was refused; epoch 1's checkpoint is intact
    assert_all_finite(saved)
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint.name]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_save_checkpoint_refuses_a_non_finite_tensor(tmp_path: Path, bad: float) -> None:
    path = tmp_path / "checkpoint.pt"
    state = {
        "format": 1,
        "model": {
            "steps": torch.tensor(3),  # integer buffers are not checked
            "layer.weight": torch.tensor([1.0, bad]),
        },
    }
    with pytest.raises(TrainingError, match="non-finite") as refused:
        save_checkpoint(path, state)
    assert "layer.weight" in str(refused.value) and str(path) in str(refused.value)
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------- checkpoint files


def test_checkpoints_are_written_atomically(tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoint-head.pt"
    linear_loop(checkpoint)
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint.name]  # no temp file left
    assert load_checkpoint(checkpoint)["epoch"] == 3


def test_a_crash_while_saving_leaves_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = tmp_path / "checkpoint-head.pt"
    linear_loop(checkpoint)
    before = checkpoint.read_bytes()

    def dies_halfway(state: Any, target: Any) -> None:
        handle = target if hasattr(target, "write") else open(target, "wb")  # noqa: SIM115
        handle.write(before[: len(before) // 2])
        handle.flush()
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", dies_halfway)
    state = load_checkpoint(checkpoint)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(checkpoint, {**state, "epoch": 4})
    assert checkpoint.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint.name]


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "foreign"])
def test_a_damaged_checkpoint_is_a_training_error_naming_the_file(
    tmp_path: Path, damage: str
) -> None:
    checkpoint = tmp_path / "checkpoint-head.pt"
    linear_loop(checkpoint)
    data = checkpoint.read_bytes()
    if damage == "truncated":
        checkpoint.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        checkpoint.write_bytes(b"")
    elif damage == "garbage":
        checkpoint.write_bytes(b"not a checkpoint\n" * 64)
    else:  # a readable torch file that is not ours
        torch.save({"state_dict": {"w": torch.zeros(2)}}, checkpoint)

    with pytest.raises(TrainingError) as failed:
        load_checkpoint(checkpoint)
    assert str(checkpoint) in str(failed.value)
    with pytest.raises(TrainingError) as failed:  # and resuming says the same
        linear_loop(checkpoint, resume=True)
    assert str(checkpoint) in str(failed.value)


def test_a_missing_checkpoint_means_a_fresh_start(tmp_path: Path) -> None:
    assert load_checkpoint(tmp_path / "none.pt") is None
    _, outcome = linear_loop(tmp_path / "none.pt", resume=True)
    assert outcome.resumed_from is None and len(outcome.history) == 3


def test_resuming_a_checkpoint_of_another_stage_is_refused(tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoint.pt"
    linear_loop(checkpoint, stage="head")
    with pytest.raises(TrainingError) as refused:
        linear_loop(checkpoint, stage="fine-tune", resume=True)
    message = str(refused.value)
    assert "'head'" in message and "'fine-tune'" in message and str(checkpoint) in message


# ------------------------------------------------------------ the CLI, killed


def train_arguments(data: Path, out: Path, epochs: int) -> list[str]:
    return [
        "train",
        str(data),
        "--strategy",
        "scratch",
        "--backbone",
        BACKBONE,
        "--image-size",
        "32",
        "--epochs",
        str(epochs),
        "--batch-size",
        "8",
        "--patience",
        "0",
        "--device",
        "cpu",
        "--no-cache",
        "--out",
        str(out),
    ]


def wait_for(path: Path, pattern: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not re.search(pattern, path.read_text(), re.MULTILINE):
        if process.poll() is not None:
            err = path.with_name("stderr.txt").read_text()
            pytest.fail(f"headstart exited ({process.returncode}) before {pattern!r}:\n{err}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no {pattern!r} in {timeout}s")
        time.sleep(0.02)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_cli_signal_saves_a_checkpoint_exits_130_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], signum: int
) -> None:
    # 10 per class: 24 train images, of which 3 are carved off for validation (one per class).
    data = build_image_folder(tmp_path / "data", {"cat": 10, "dog": 10, "fox": 10}, size=(32, 32))
    out = tmp_path / "model"
    arguments = train_arguments(data, out, epochs=12)
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
        "HEADSTART_CACHE": str(tmp_path / "cache"),
    }
    stdout, stderr = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    code = "import sys; from headstart.cli import main; sys.exit(main(sys.argv[1:]))"
    with stdout.open("w") as out_file, stderr.open("w") as err_file:
        process = subprocess.Popen(
            [sys.executable, "-c", code, *arguments], stdout=out_file, stderr=err_file, env=env
        )
        try:
            wait_for(stdout, r"^scratch epoch 1:", process, timeout=120)
            process.send_signal(signum)
            returncode = process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()

    err = stderr.read_text()
    assert returncode == 130, err
    checkpoint = out / "checkpoints" / "checkpoint-scratch.pt"
    line = err.strip().splitlines()[-1]
    assert line.startswith("headstart: Interrupted at epoch") and str(checkpoint) in line
    epoch, step = map(int, re.search(r"epoch (\d+), step (\d+)", line).groups())
    saved = load_checkpoint(checkpoint)
    assert saved["stage"] == "scratch"
    assert (saved["epoch"], saved["step"]) == (epoch - 1, step)
    assert epoch < 12 and not (out / "model.safetensors").exists()

    capsys.readouterr()
    assert main([*arguments, "--resume"]) == 0
    resumed = capsys.readouterr().out
    first = int(re.search(r"^scratch epoch (\d+):", resumed, re.MULTILINE).group(1))
    assert first == epoch  # the interrupted epoch is finished, not restarted
    assert "model saved to" in resumed
    assert (out / "model.safetensors").is_file() and (out / "headstart.json").is_file()
    assert not (out / "checkpoints").exists()
    assert len(ImageClassifier.load(out).history_) == 12


class _SignalOnFirstRead(TensorDataset):
    """A validation set that sends SIGINT to this process when validation starts."""

    def __init__(self, base: TensorDataset) -> None:
        super().__init__(*base.tensors)
        self.sent = False

    def __getitem__(self, index: int):
        if not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)
        return super().__getitem__(index)


def test_an_interrupt_during_validation_stops_after_the_epoch_checkpoint(tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoint.pt"
    model = linear_model()
    config = scratch_config(epochs=3, batch_size=8, patience=0, fast=False)
    with pytest.raises(TrainingInterrupted, match=r"epoch 2, step 0"):
        train_loop(
            model,
            features(),
            _SignalOnFirstRead(features(9)),
            param_groups=[{"params": list(model.parameters()), "lr": 0.05}],
            config=config,
            stage="head",
            checkpoint=checkpoint,
        )
    saved = load_checkpoint(checkpoint)
    assert (saved["epoch"], saved["step"]) == (1, 0)  # epoch 1 done, validated and saved
    assert len(saved["history"]) == 1
