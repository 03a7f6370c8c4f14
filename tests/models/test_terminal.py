"""Terminal output: pull's step lines and import's bar, on a terminal and elsewhere."""

from __future__ import annotations

import io

from emberd.models.terminal import StepPrinter, text_progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_step_printer_redraws_a_transfer_in_place_on_a_terminal() -> None:
    out = _Terminal()
    printer = StepPrinter(out)
    printer.step("pulling manifest")
    printer.transfer("pulling 0123456789ab", 0, 2_000_000)
    printer.transfer("pulling 0123456789ab", 1_000_000, 2_000_000)
    printer.step("interrupted")  # a step ends an unfinished transfer line first
    printer.transfer("pulling ba9876543210", 1500, 1500)
    printer.step("success")
    assert out.getvalue() == (
        "pulling manifest\n"
        "\rpulling 0123456789ab:   0% of 2 MB"
        "\rpulling 0123456789ab:  50% of 2 MB\n"
        "interrupted\n"
        "\rpulling ba9876543210: 100% of 1.5 KB\n"
        "success\n"
    )


def test_step_printer_writes_finished_lines_only_elsewhere() -> None:
    out = io.StringIO()
    printer = StepPrinter(out)
    printer.transfer("pulling 0123456789ab", 10, 20)
    printer.transfer("pulling 0123456789ab", 20, 20)
    printer.step("success")
    assert out.getvalue() == "pulling 0123456789ab: 100% of 20 B\nsuccess\n"


def test_progress_bar_redraws_one_line_on_a_terminal() -> None:
    out = _Terminal()
    draw = text_progress(out)
    for done in (0, 250_000, 250_000, 1_000_000):
        draw(done, 1_000_000)
    text = out.getvalue()
    assert text.count("\r") == 3  # the repeated 25% is not redrawn
    assert " 25% |" in text and "100% |" in text
    assert text.endswith("1.0 MB/1.0 MB\n") and text.count("\n") == 1


def test_progress_bar_writes_only_the_end_elsewhere() -> None:
    out = io.StringIO()
    draw = text_progress(out, "importing")
    draw(10, 100)
    draw(100, 100)
    assert out.getvalue() == f"importing 100% |{'█' * 30}| 0.0 MB/0.0 MB\n"
