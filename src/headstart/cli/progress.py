"""Progress output for the CLI: a live bar on a terminal, plain lines elsewhere."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressPrinter:
    """A ``(done, total)`` callback that draws progress for one named task.

    On a terminal it redraws one line; when output goes to a file or a CI log it
    prints a plain line at every tenth of the work, so logs stay readable.
    """

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.perf_counter()
        self._last_tenth = -1
        self._first: tuple[int, float] | None = None

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        elapsed = now - self.started
        # The rate counts from the first report, so it never includes set-up time
        # nor divides by almost nothing.
        if self._first is None:
            self._first = (done, now)
        first_done, first_time = self._first
        rate = (done - first_done) / (now - first_time) if now > first_time else 0.0
        fraction = done / total if total else 1.0
        if self.live:
            filled = int(fraction * 30)
            bar = "#" * filled + "-" * (30 - filled)
            end = "\n" if done >= total else ""
            self.stream.write(
                f"\r{self.label} [{bar}] {done}/{total} {self._rate(rate)} {elapsed:5.1f}s{end}"
            )
            self.stream.flush()
            return
        tenth = int(fraction * 10)
        if tenth > self._last_tenth:
            self._last_tenth = tenth
            self.stream.write(f"{self.label}: {done}/{total} ({self._rate(rate)}{elapsed:.1f}s)\n")
            self.stream.flush()

    @staticmethod
    def _rate(rate: float) -> str:
        return f"{rate:.1f}/s, " if rate > 0 else ""
