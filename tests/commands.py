"""What the CLI tests share: reading a command's one-line refusal."""

from __future__ import annotations


def one_line_error(result, code: int = 2) -> str:
    """The result's one-line error, after checking it is one (exit `code`, one `Error:` line,
    no traceback)."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]
