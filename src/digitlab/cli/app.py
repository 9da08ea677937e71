"""The `digitlab` command: the Typer app, its error mapping, its output streams and `main`.

User errors (`DigitlabError`) become one line on stderr and exit status 2, never a traceback.
Heavy imports (Keras, JAX, matplotlib) happen inside the commands, so `--help` is instant.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from digitlab.errors import DigitlabError

console = Console()
err_console = Console(stderr=True)


def _debug() -> bool:
    """`--debug` or DIGITLAB_DEBUG=1: show the traceback of an unexpected error."""
    return os.environ.get("DIGITLAB_DEBUG", "") not in {"", "0"} or "--debug" in sys.argv[1:]


def _error(message: str) -> None:
    err_console.print(f"[red]Error:[/red] {escape(message)}", highlight=False, soft_wrap=True)


def _is_usage_error(exc: BaseException) -> bool:
    """A Click/Typer usage error (unknown option or command, missing argument, bad choice),
    but not the "no arguments: show the help" signal. Typer vendors Click as `typer._click`,
    whose exceptions derive from `typer.TyperException`, not from `click.ClickException`."""
    return (
        isinstance(exc, typer.TyperException | click.ClickException)
        and hasattr(exc, "format_message")
        and type(exc).__name__ != "NoArgsIsHelpError"
    )


def _usage_error(exc) -> typer.Exit:
    """Print a usage error as the README's one line, `Error: … (see `CMD --help`)`."""
    message = " ".join(exc.format_message().split()).replace("Value error, ", "").rstrip(".")
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        message += f" (see `{ctx.command_path} --help`)"
    _error(message)
    return typer.Exit(getattr(exc, "exit_code", 2))


class _Group(TyperGroup):
    """Turns a `DigitlabError` into `Error: <message>` on stderr and exit status 2, a usage
    error (bad option, missing argument, bad choice, unknown command; any command's) into
    the same one line with exit status 2 instead of Click's boxed panel, and any other
    exception (a bug of ours) into one line that points to `--debug`, exit status 1."""

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except Exception as exc:
            if _is_usage_error(exc):
                raise _usage_error(exc) from None
            raise

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DigitlabError as exc:
            _error(str(exc))
            raise typer.Exit(2) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt, SystemExit, BrokenPipeError):
            raise  # a closed pipe (`digitlab ... | head`) is handled in main()
        except Exception as exc:
            if _is_usage_error(exc):
                raise _usage_error(exc) from None
            if _debug() or isinstance(exc, typer.TyperException | click.ClickException):
                raise
            detail = " ".join(str(exc).split())[:200]
            _error(
                f"unexpected {type(exc).__name__}: {detail}. This is a bug in digitlab; "
                "rerun with --debug (or DIGITLAB_DEBUG=1) for the traceback and report it"
            )
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_Group,
    help="Neural networks on handwritten digits: train, evaluate, predict, serve and tune.\n\n"
    "Start with `digitlab train` (the notebook's network on MNIST), then "
    "`digitlab evaluate latest`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _options(
    debug: bool = typer.Option(
        False, "--debug", help="Show the full traceback of an unexpected error (for bug reports)."
    ),
) -> None:
    """Neural networks on handwritten digits: train, evaluate, predict, serve and tune."""


def count(n: int, noun: str) -> str:
    """ "1 epoch", "2 epochs": a count with its noun, singular for one."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def print_json(data) -> None:
    typer.echo(json.dumps(data, indent=2))


def _exit_now(done: SystemExit) -> None:
    """End the process with `done`'s status without the interpreter's teardown, which takes
    1.0–1.3 s after `digitlab train` (freeing JAX's compiled programs and every module's
    objects) and does nothing a finished command needs. The at-exit handlers still run
    (logging's flush, multiprocessing's joins, temporary folders' removal) and both streams
    are flushed. Returns (for the usual exit) when a thread is still running, the status is
    not a number, or a profiler or debugger is attached (`python -m cProfile` writes its
    profile after the program returns)."""
    code = 0 if done.code is None else done.code
    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    watched = sys.getprofile() is not None or sys.gettrace() is not None
    if watched or not isinstance(code, int) or any(t.is_alive() and not t.daemon for t in others):
        return
    atexit._run_exitfuncs()  # what the interpreter would call next
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # the reader went away: as below
        code = 141
    os._exit(code)


def main() -> None:
    """Entry point of the `digitlab` command."""
    try:
        app()
    except SystemExit as done:
        _exit_now(done)
        raise
    except BrokenPipeError:  # the reader went away (`digitlab runs | head`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's own flush at exit must not fail
        sys.exit(141)  # 128 + SIGPIPE, as a shell reports it
