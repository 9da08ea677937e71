"""The README can't drift from the CLI (datasette's test_docs.py is the model): every option of
every command is documented, and every option the README shows a command with exists."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer.main

from digitlab.cli import app

README = (Path(__file__).parent.parent / "README.md").read_text()
# Typer's own options, the same on every command.
BUILT_IN = {"--help", "--install-completion", "--show-completion"}
FENCED = re.compile(r"^```[^\n]*\n(.*?)^```", flags=re.S | re.M)


def _walk(command, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], object]]:
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _walk(sub, (*path, name))


COMMANDS = dict(_walk(typer.main.get_command(app)))


def _options(command) -> set[str]:
    """A command's long options, `--no-x` forms included."""
    names = {name for p in command.params for name in (*p.opts, *p.secondary_opts)}
    return {name for name in names if name.startswith("--")} - BUILT_IN


def _code(text: str) -> list[str]:
    """The code the README shows: each line of a fenced block (a `\\` continuation joined),
    and each inline code span of the prose."""
    lines = []
    for block in FENCED.findall(text):
        lines += block.replace("\\\n", " ").splitlines()
    spans = re.findall(r"`([^`\n]+)`", FENCED.sub("", text))
    top = {path[0] for path in COMMANDS if path}
    # `predict --npy` in prose is the predict command too
    return lines + [f"digitlab {s}" if s.split()[:1] and s.split()[0] in top else s for s in spans]


def _invocations(line: str) -> Iterator[tuple[tuple[str, ...], list[str]]]:
    """(command path, long options given) for each `digitlab ...` in a line of code."""
    for part in re.split(r"\||&&|;|\$\(|\)", line):
        words = part.split("#")[0].split()
        if "digitlab" not in words:
            continue
        rest = words[words.index("digitlab") + 1 :]
        path: tuple[str, ...] = ()
        while rest and (*path, rest[0]) in COMMANDS:
            path, rest = (*path, rest[0]), rest[1:]
        yield path, [word.split("=")[0] for word in rest if word.startswith("--")]


SHOWN = [
    (path, option, line.strip())
    for line in _code(README)
    for path, options in _invocations(line)
    for option in options
]


@pytest.mark.parametrize(
    ("path", "option"),
    [(path, option) for path, command in COMMANDS.items() for option in sorted(_options(command))],
    ids=lambda value: " ".join(value) if isinstance(value, tuple) else value,
)
def test_every_option_of_every_command_is_in_the_readme(path, option):
    assert re.search(re.escape(option) + r"(?![\w-])", README), (
        f"`digitlab {' '.join(path)} {option}` is not documented in README.md"
    )


def test_every_option_the_readme_shows_exists():
    assert len(SHOWN) > 50  # the README's examples were found
    unknown = [
        f"digitlab {' '.join(path)} {option}  (in: {line})"
        for path, option, line in SHOWN
        if option not in _options(COMMANDS[path]) | {"--help"}
    ]
    assert unknown == [], "README shows options these commands don't have:\n" + "\n".join(unknown)


def test_the_readme_parser_finds_commands_and_options():
    found = list(_invocations("DIGITLAB_RUNS_DIR=r digitlab tune report --study=wide --top 3 | x"))
    assert found == [(("tune", "report"), ["--study", "--top"])]
    assert list(_invocations("digitlab train --epochs 2  # --not-an-option")) == [
        (("train",), ["--epochs"])
    ]


def test_the_notes_measured_section_is_generated_from_the_records():
    """README's "What the notes claim, measured" is what scripts/notes_measured.py makes of
    docs/experiments/*.json: edit the records (bench_experiments.py --write), not the text."""
    script = Path(__file__).resolve().parent.parent / "scripts" / "notes_measured.py"
    checked = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=120
    )
    assert checked.returncode == 0, checked.stderr
