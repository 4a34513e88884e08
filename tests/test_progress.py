"""CLI progress: a live bar on a terminal, readable lines in a log, units shown."""

from __future__ import annotations

import io
import time

import pytest

from headstart.cli import common
from headstart.cli.common import PrintingCallback
from headstart.cli.progress import ProgressPrinter


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def report(printer: ProgressPrinter, total: int, pause: float = 0.0) -> None:
    for done in range(1, total + 1):
        printer(done, total)
        time.sleep(pause)


def test_a_log_gets_a_plain_line_at_every_tenth_with_units_and_no_empty_rate():
    stream = io.StringIO()
    report(ProgressPrinter("features train", "images", stream), total=40, pause=0.002)
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    # 1/40 (it started), then 4/40, 8/40, ..., 40/40: one line per tenth, none in between
    assert [line.split()[2] for line in lines] == ["1/40", *(f"{4 * k}/40" for k in range(1, 11))]
    assert lines[0] == "features train: 1/40 images"  # nothing measured yet: no rate, no time
    assert lines[-1].startswith("features train: 40/40 images (")
    assert " images/s, " in lines[-1]
    assert not any("0.0/s" in line or "(0.0s)" in line for line in lines)


def test_a_terminal_gets_one_live_bar_that_ends_on_its_own_line():
    stream = FakeTerminal()
    report(ProgressPrinter("epoch 1", "steps", stream), total=20)
    text = stream.getvalue()
    assert text.count("\r") >= 2  # redrawn in place, not a line per update
    final = text.rsplit("\r", 1)[-1]
    assert final.startswith("epoch 1: 100%|") and "20/20 steps" in final
    assert " steps/s]" in final and final.endswith("\n")


def test_the_callback_shows_images_for_extraction_and_steps_for_epochs(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(common, "ProgressPrinter", _printer_to(stream))
    callback = PrintingCallback()
    for done in (5, 10):
        callback.on_progress("features train", done, 10)
    for step in (1, 2):
        callback.on_step(1, step, 2, loss=0.5)
    callback.on_progress("features train", 10, 10)  # a second pass starts afresh
    lines = stream.getvalue().splitlines()
    assert lines[:2] == ["features train: 5/10 images", lines[1]]
    assert lines[1].startswith("features train: 10/10 images (")
    assert lines[2] == "epoch 1: 1/2 steps"
    assert lines[-1] == "features train: 10/10 images"


def _printer_to(stream: io.StringIO):
    def make(label: str, unit: str) -> ProgressPrinter:
        return ProgressPrinter(label, unit, stream)

    return make


@pytest.mark.parametrize("total", [0, 1])
def test_a_task_done_in_one_report_prints_one_line(total):
    stream = io.StringIO()
    ProgressPrinter("features val", "images", stream)(total, total)
    assert stream.getvalue() == f"features val: {total}/{total} images\n"
