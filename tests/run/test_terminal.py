"""The display wrapper that survives its terminal (lrsup.supervisor.run.terminal)."""

from __future__ import annotations

from lrsup.supervisor.run.terminal import Terminal


class PipeDisplay:
    """Writes lines until ``broken``; then every write raises like a pipe without a reader."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.broken = False
        self.closed = 0

    def _write(self, text: str) -> None:
        if self.broken:
            raise BrokenPipeError(32, "Broken pipe")
        self.lines.append(text)

    def on_output_line(self, line: str) -> None:
        self._write(line)

    def on_state(self, event: str, detail: str) -> None:
        self._write(f"{event}: {detail}")

    def close(self) -> None:
        self.closed += 1


def test_the_first_failed_write_switches_the_display_off_once():
    told: list[tuple[str, str]] = []
    inner = PipeDisplay()
    display = Terminal(inner, lambda event, detail: told.append((event, detail)))
    display.on_output_line("one")
    inner.broken = True
    display.on_output_line("two")  # raises inside: swallowed, switched off
    display.on_state("running", "three")
    display.on_record(object())  # the inner display has no on_record: nothing happens
    assert inner.lines == ["one"] and display.lost == "output_closed"
    assert [e for e, _ in told] == ["output_closed"] and "run directory only" in told[0][1]
    assert display.lines == ["one"]  # other attributes are the wrapped display's


def test_a_hangup_switches_it_off_and_says_so_once():
    told: list[str] = []
    inner = PipeDisplay()
    display = Terminal(inner, lambda event, detail: told.append(event))
    display.hang_up()
    display.hang_up()
    display.on_output_line("after")
    assert told == ["hangup"] and inner.lines == []
