"""The one progress display of build, tune, verify and run, aware of where it is written.

On a terminal it is click's live progress bar, naming what is in hand now (several things at once when
kernels compile in parallel or cases run on several GPUs), cut to fit the terminal and `WIDTH` columns.
Lines that must stay (`echo`: a build's result per kernel) are written above the bar.

In a log (the stream not a terminal: CI, `2> file`, a Slurm job) there is no bar: `echo` lines as they come,
and, when `every_s` is set, a plain line at most every `every_s` seconds and one at the end, so that a long
run shows life without one line per case.
"""

from __future__ import annotations

import os
import shutil
import sys
import time

import click

LOG_EVERY_S = 10.0
# Every line a person reads fits this many columns (the bar also fits a narrower terminal).
WIDTH = 100
# The bar's own width, click's default.
BAR_COLS = 36


def is_terminal(stream) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM", "") != "dumb"
    except (AttributeError, ValueError):   # no isatty, or a closed stream
        return False


def fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


class Progress:
    def __init__(self, total: int, label: str, stream=None, enabled: bool = True,
                 every_s: float | None = LOG_EVERY_S, live: bool | None = None):
        self.total, self.label = total, label
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.every_s = every_s
        self.live = enabled and (is_terminal(self.stream) if live is None else live)
        self.done = 0
        self.started = time.monotonic()
        self._last_line = self.started
        self._in_hand: list[str] = []
        self._last = ""
        self._bar = None

    def __enter__(self) -> "Progress":
        if self.live:
            self._bar = click.progressbar(length=self.total, label=self.label, file=self.stream,
                                          show_pos=True, width=BAR_COLS, item_show_func=lambda _: self._shown())
            self._bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
            self._bar = None

    def columns(self) -> int:
        """The width every line keeps to: `WIDTH`, or the terminal's when the bar is live and narrower."""
        if not self.live:
            return WIDTH
        return max(20, min(WIDTH, shutil.get_terminal_size((WIDTH, 24)).columns))

    def start(self, item: str) -> None:
        """`item` is being worked on now."""
        self._in_hand.append(item)
        if self._bar is not None:
            self._bar.render_progress()

    def advance(self, item: str, outcome: str = "") -> None:
        """`item` is finished; `outcome` says how it ended ("pass", "built", ...)."""
        if item in self._in_hand:
            self._in_hand.remove(item)
        self._last = f"{item} {outcome}" if outcome else item
        self.done += 1
        if self._bar is not None:
            self._bar.update(1)
            return
        now = time.monotonic()
        # The last unit always gets its line: a log shows the run finished.
        if self.enabled and self.every_s is not None and (self.done == self.total
                                                          or now - self._last_line >= self.every_s):
            elapsed = now - self.started
            self._write(f"{self.label}: {self.done}/{self.total} after {elapsed:.0f} s"
                        + (f"; last {self._last}" if self._last else ""))
            self._last_line = now

    def echo(self, line: str) -> None:
        """A line that stays: above the bar on a terminal, as it comes in a log."""
        if self._bar is None:
            self._write(line)
            return
        self.stream.write("\r\x1b[K" + line + "\n")
        self.stream.write("\r" + self._bar.format_progress_line())   # the bar again, below the line
        self.stream.flush()

    def _shown(self) -> str:
        """What the bar names: what is in hand, else how the last one ended; cut to the bar's line."""
        text = ", ".join(self._in_hand) or self._last
        fixed = len(f"{self.label}  [{'#' * BAR_COLS}]  {self.total}/{self.total}  00:00:00  ")
        return fit(text, max(10, self.columns() - fixed - 1))

    def _write(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()
