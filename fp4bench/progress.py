"""One progress display for build, tune, verify and run, aware of where it is written.

On a terminal it is click's live progress bar, showing the case (or kernel) in hand. In a log (stderr not a
terminal: CI, `2> file`, a Slurm job) it writes a plain line at most every `LOG_EVERY_S` seconds, and one at
the end, so a long run shows life without one line per case.
"""

from __future__ import annotations

import sys
import time

import click

LOG_EVERY_S = 10.0


class Progress:
    def __init__(self, total: int, label: str, stream=None, enabled: bool = True, every_s: float = LOG_EVERY_S):
        self.total, self.label = total, label
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.every_s = every_s
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.done = 0
        self.started = time.monotonic()
        self._last_line = self.started
        self._bar = None

    def __enter__(self) -> "Progress":
        if self.enabled and self.tty:
            self._bar = click.progressbar(length=self.total, label=self.label, file=self.stream, show_pos=True,
                                          item_show_func=lambda item: item)
            self._bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def start(self, item: str) -> None:
        """Show what is being worked on now (on a terminal)."""
        if self._bar is not None:
            self._bar.current_item = item
            self._bar.render_progress()

    def advance(self, item: str) -> None:
        """One more unit finished (`item` says which and how it ended)."""
        self.done += 1
        if self._bar is not None:
            self._bar.update(1, item)
            return
        now = time.monotonic()
        # The last unit always gets its line: a log shows the run finished.
        if self.enabled and (self.done == self.total or now - self._last_line >= self.every_s):
            self._line(item)
            self._last_line = now

    def _line(self, item: str) -> None:
        elapsed = time.monotonic() - self.started
        self.stream.write(f"{self.label}: {self.done}/{self.total} after {elapsed:.0f} s"
                          + (f"; last {item}" if item else "") + "\n")
        self.stream.flush()
