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

    def __call__(self, done: int, total: int) -> None:
        elapsed = time.perf_counter() - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        fraction = done / total if total else 1.0
        if self.live:
            filled = int(fraction * 30)
            bar = "#" * filled + "-" * (30 - filled)
            end = "\n" if done >= total else ""
            self.stream.write(
                f"\r{self.label} [{bar}] {done}/{total} {rate:6.1f}/s {elapsed:5.1f}s{end}"
            )
            self.stream.flush()
            return
        tenth = int(fraction * 10)
        if tenth > self._last_tenth:
            self._last_tenth = tenth
            self.stream.write(f"{self.label}: {done}/{total} ({rate:.1f}/s, {elapsed:.1f}s)\n")
            self.stream.flush()
