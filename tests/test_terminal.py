"""Terminal output: pull's step lines on a terminal and elsewhere."""

from __future__ import annotations

import io

from models.terminal import StepPrinter


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
