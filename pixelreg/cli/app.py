"""The Typer app: the command group, its error wrapper and its exit codes.

People read stderr (progress, tables, errors); scripts read stdout (paths, or JSON with
--json). Exit codes: 0 success, 1 an error with a one-line `Error: ...`, 2 a usage error,
130 interrupted, 141 when stdout's reader has gone.
"""

from __future__ import annotations

import functools
import json
import os
import select
import signal
import sys
import traceback
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import typer
import typer.core
from rich.console import Console

from pixelreg import __version__
from pixelreg.errors import PixelregError

F = TypeVar("F", bound=Callable[..., Any])
console = Console(stderr=True, highlight=False, soft_wrap=True)
if not console.is_terminal:  # logs and pipes: room for the tables, no 80-column squeeze
    console.width = max(console.width, 120)


def is_click_error(exc: BaseException) -> bool:
    """Whether `exc` is a usage error of the parser (click's, which typer raises): it carries
    the exit code and the message to show."""
    return hasattr(exc, "exit_code") and hasattr(exc, "format_message")


class OneLineErrors(typer.core.TyperGroup):
    """The command group, with every way of ending turned into an exit code and at most one line.

    Usage errors become one `Error:` line (exit 2) instead of a box; Ctrl-C and SIGTERM
    exit 130; a reader that closes the pipe early (`| head -1`) ends the command quietly,
    as the Unix convention has it (exit 141, like a process that SIGPIPE stops).
    """

    def main(self, *args: Any, **kwargs: Any) -> Any:
        standalone = kwargs.pop("standalone_mode", True)
        kwargs["standalone_mode"] = False
        if not standalone:
            return super().main(*args, **kwargs)
        previous = signal.signal(signal.SIGTERM, interrupt)
        try:
            code = run_quietly(lambda: super(OneLineErrors, self).main(*args, **kwargs))
        finally:
            signal.signal(signal.SIGTERM, previous)
        sys.exit(code)

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, join_size_arguments(args))

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().make_context(*args, **kwargs)
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:  # while a subcommand's options are parsed
            raise fail("interrupted", 130) from None


def join_size_arguments(argv: list[str]) -> list[str]:
    """Let `--size H W` (two numbers) stand for `--size HxW`, since options take one value."""
    joined: list[str] = []
    i = 0
    while i < len(argv):
        joined.append(argv[i])
        if argv[i] == "--size" and i + 2 < len(argv) and argv[i + 1].isdigit() and argv[i + 2].isdigit():
            joined.append(f"{argv[i + 1]}x{argv[i + 2]}")
            i += 3
            continue
        i += 1
    return joined


def interrupt(signum: int, frame: Any) -> None:
    """SIGTERM handled as Ctrl-C is: the command stops, cleans up and exits 130."""
    raise KeyboardInterrupt


def reader_left() -> int:
    """The exit code when stdout's reader has gone: quiet, as for a process SIGPIPE stops."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
    except (OSError, ValueError):
        pass
    return 128 + signal.SIGPIPE


def reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it: a command that writes rows only now
    and then learns it at once, rather than at its next row (or never, if none follows)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), 0)  # no event asked for: errors and hang-ups only
        return any(event & (select.POLLERR | select.POLLHUP) for _, event in poller.poll(0))
    except (AttributeError, ValueError, OSError):  # no file descriptor (a test's buffer), no poll
        return False


def run_quietly(invoke: Callable[[], Any]) -> int:
    """Run the command line; its exit code, every error told in one line on stderr."""
    if sys.stderr is None:  # stderr closed: errors go nowhere, but exit codes still tell
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    if sys.stdout is None:
        write_error("standard output is closed; give the command somewhere to print (> file)")
        return 1
    try:
        result = invoke()
        sys.stdout.flush()
    except BrokenPipeError:
        return reader_left()
    except (KeyboardInterrupt, typer.Abort):
        write_error("interrupted")
        return 130
    except Exception as exc:
        if not is_click_error(exc):
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":
            sys.stderr.write(exc.format_message() + "\n")  # type: ignore[attr-defined]
        else:
            write_error(" ".join(exc.format_message().split()))  # type: ignore[attr-defined]
        return int(exc.exit_code)  # type: ignore[attr-defined]
    return result if isinstance(result, int) else 0


def write_error(message: str) -> None:
    """One `Error:` line on stderr."""
    sys.stderr.write(f"Error: {message}\n")
    sys.stderr.flush()


def show_warning(
    message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    """A warning as one `Warning:` line on stderr, without the source line it came from."""
    sys.stderr.write(f"Warning: {message}\n")


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one `Error:` line to stderr and return the Exit to raise."""
    write_error(message)
    return typer.Exit(code)


def emit(data: Any, as_json: bool) -> None:
    """Write the command's result to stdout: JSON, or one path per line."""
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, allow_nan=False) + "\n")
    elif data is not None:
        sys.stdout.write(f"{data}\n")


def say(quiet: bool) -> Callable[[str], None]:
    """Where a command's progress messages go: the console, or nowhere with --quiet."""
    return (lambda message: None) if quiet else console.print


app = typer.Typer(
    cls=OneLineErrors,
    name="pixelreg",
    help="Train neural networks to locate bright points in images, and measure them honestly.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rich's option tables cut long flags short at 80 columns
    context_settings={"help_option_names": ["-h", "--help"]},
)


MEMORY_HINTS = {  # what a command that ran out of memory can be given less of
    "generate": "lower --n or --size",
    "train": "lower --n, --size or --batch-size",
    "evaluate": "evaluate a smaller --data",
    "predict": "split the frames into smaller files",
    "calibrate": "lower --frames",
    "plot": "lower --zoom",
}


def guarded(function: F) -> F:
    """The command `function` with its expected failures as one `Error:` line, never a traceback."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except PixelregError as exc:
            raise fail(exc.for_command_line(), exc.code) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None
        except BrokenPipeError:
            raise typer.Exit(reader_left()) from None
        except MemoryError:
            raise fail(
                f"out of memory; {MEMORY_HINTS.get(function.__name__, 'give it less data at once')}"
            ) from None
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            raise fail(f"{exc.strerror or exc}{where}") from None
        except typer.Exit:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug still gets one line, with details on request
            if is_click_error(exc):
                raise  # usage errors: OneLineErrors tells them
            if os.environ.get("PIXELREG_DEBUG"):
                traceback.print_exc()
            raise fail(
                f"unexpected {type(exc).__name__}: {exc} (set PIXELREG_DEBUG=1 for the traceback "
                "and please report it)"
            ) from None

    return wrapper  # type: ignore[return-value]


def command(function: F) -> F:
    """Register `function` as a command of the app, guarded."""
    return app.command()(guarded(function))


def version_callback(value: bool) -> None:
    if value:
        sys.stdout.write(f"pixelreg {__version__}\n")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(
        False, "--version", callback=version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Train neural networks to locate bright points in images, and measure them honestly."""


def main() -> None:
    """Console-script entry point: numpy's warnings of numerical trouble shown as `Warning:` lines,
    other libraries' warnings (for their developers) silenced unless PIXELREG_DEBUG is set."""
    if not os.environ.get("PIXELREG_DEBUG"):
        warnings.simplefilter("ignore")
        warnings.filterwarnings("default", category=RuntimeWarning, module="numpy")
        warnings.filterwarnings("default", category=RuntimeWarning, module="pixelreg")
        warnings.showwarning = show_warning
    app(prog_name="pixelreg")
