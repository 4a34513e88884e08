"""Progress output for the CLI: a live tqdm bar on a terminal, plain lines elsewhere.

Progress lives here, not in the library: the library reports ``(done, total)`` through
``Callback.on_progress`` and ``on_step``, and the CLI decides how that looks.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class ProgressPrinter:
    """A ``(done, total)`` callback that draws progress for one named task.

    On a terminal it is a tqdm bar, redrawn in place. When output goes to a file or a
    CI log, a stream of redraws would be unreadable, so it prints a plain line at every
    tenth of the work instead. Both show the time elapsed and the time left (the rate so
    far over the work left). The rate counts from the first report, so it never
    includes set-up time; the first line, with nothing yet to measure, shows none.
    """

    def __init__(self, label: str, unit: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self.done = self.total = 0
        self._started = time.perf_counter()
        self._first: tuple[int, float] | None = None  # (done, time) at the first report
        self._last_tenth = -1
        self._bar: Any = None  # the tqdm bar, made at the first report on a terminal

    def __call__(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        now = time.perf_counter()
        if self._first is None:
            self._first = (done, now)
        if self.live:
            self._draw(done, total)
            return
        tenth = int(10 * done / total) if total else 10
        if tenth <= self._last_tenth:
            return
        self._last_tenth = tenth
        line = f"{self.label}: {done}/{total} {self.unit}"
        first_done, first_time = self._first
        if done > first_done and now > first_time:
            rate = (done - first_done) / (now - first_time)
            speed = f"{rate:.1f}" if rate >= 1 else f"{rate:.2g}"
            elapsed = now - self._started
            took = f", {elapsed:.1f}s" if elapsed >= 0.05 else ""
            left = f", ~{(total - done) / rate:.0f}s left" if done < total else ""
            line += f" ({speed} {self.unit}/s{took}{left})"
        self.stream.write(line + "\n")
        self.stream.flush()

    def _draw(self, done: int, total: int) -> None:
        if self._bar is None:
            from tqdm import tqdm  # only on a terminal: `headstart --help` never needs it

            self._bar = tqdm(
                total=total,
                desc=self.label,
                unit=f" {self.unit}",  # "12/40 images", "3.1 images/s"
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt}{unit} "
                "[{elapsed}<{remaining}, {rate_fmt}]",
                file=self.stream,
                leave=True,
            )
        self._bar.update(done - self._bar.n)
        if done >= total:
            self.close()

    @property
    def finished(self) -> bool:
        """Whether the last report reached the total: a later one starts a new pass."""
        return self._first is not None and self.done >= self.total

    def close(self) -> None:
        """End the live bar (its last state stays on screen); plain lines need nothing."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
