"""The one progress display (fp4bench.progress): plain lines in a log, click's bar on a terminal."""

from __future__ import annotations

import io
import os
import re

import pytest

from fp4bench.progress import WIDTH, Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def terminal(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setattr("shutil.get_terminal_size", lambda fallback=None: os.terminal_size((200, 40)))
    return Terminal()


def bars(text: str) -> list[str]:
    """Every state the bar was drawn in, without the cursor codes."""
    return [s.replace("\x1b[?25l", "").replace("\x1b[?25h", "").rstrip()
            for s in text.split("\r") if s.replace("\x1b[?25l", "").startswith("running")]


def test_a_log_gets_a_line_at_most_every_few_seconds_and_one_at_the_end():
    out = io.StringIO()
    with Progress(3, "running", stream=out, every_s=3600) as p:
        for name in ("a", "b", "c"):
            p.start(name)
            p.advance(name, "pass")
    assert re.fullmatch(r"running: 3/3 after \d+ s; last c pass\n", out.getvalue())
    out = io.StringIO()
    with Progress(2, "verifying", stream=out, every_s=0) as p:
        p.start("a")
        p.advance("a", "fail")
        p.advance("b")
    lines = out.getvalue().splitlines()
    assert [re.sub(r"after \d+ s", "after N s", x) for x in lines] == \
        ["verifying: 1/2 after N s; last a fail", "verifying: 2/2 after N s; last b"]


def test_quiet_and_line_free_displays_write_only_echoed_lines():
    out = io.StringIO()
    with Progress(1, "running", stream=out, enabled=False) as p:
        p.start("a")
        p.advance("a", "pass")
        p.echo("kept")
    with Progress(1, "building", stream=out, every_s=None) as p:
        p.advance("b", "built")
    assert out.getvalue() == "kept\n"


def test_the_bar_names_everything_in_hand_then_how_the_last_ended(terminal):
    with Progress(4, "running", stream=terminal) as p:
        assert p.live
        p.start("k1 nvfp4 128x256")
        p.start("k2 nvfp4 128x256")              # a second GPU's case
        shown = bars(terminal.getvalue())[-1]
        assert "0/4" in shown and shown.endswith("  k1 nvfp4 128x256, k2 nvfp4 128x256")
        p.advance("k1 nvfp4 128x256", "pass")
        assert bars(terminal.getvalue())[-1].endswith("  k2 nvfp4 128x256")
        p.advance("k2 nvfp4 128x256", "fail")
        assert bars(terminal.getvalue())[-1].endswith("  k2 nvfp4 128x256 fail")
        p.start("x" * 300)
        assert all(len(b) <= WIDTH for b in bars(terminal.getvalue()))
        assert bars(terminal.getvalue())[-1].endswith("x…")


def test_an_echoed_line_stays_above_the_bar(terminal):
    with Progress(2, "running", stream=terminal) as p:
        p.start("a")
        p.echo("ok      a")
        p.advance("a", "built")
    text = terminal.getvalue()
    before, after = text.split("\r\x1b[Kok      a\n")
    assert bars(before)[-1].endswith("0/2  a")
    assert bars(after)[0].endswith("0/2  a")          # the bar is drawn again under the line
    assert text.endswith("\n")                       # and ends on a line of its own
