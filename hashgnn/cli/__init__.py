"""The ``hashgnn`` command: a thin layer over the Python API.

Each sub-module adds its commands to :data:`app`. User errors (:class:`hashgnn.errors.HashgnnError`)
are printed as one paragraph on stderr with exit status 2, never as a traceback.
"""

from __future__ import annotations

import os

# OpenMP's default spin-waiting makes 2-thread PyTorch up to 10x slower on a machine whose cores are
# shared with other work (measured, docs/MODEL.md). It only takes effect if set before torch loads,
# which is why the command (not the library, which must not change its host process) sets it; a
# user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import signal
import sys
import threading
import warnings
from typing import Annotated

import typer

from hashgnn import interrupt
from hashgnn.errors import DataWarning, HashgnnError
from hashgnn.memory import keep_freed_memory

app = typer.Typer(
    name="hashgnn",
    help="Learn binary codes for users and items with a graph neural network (HashGNN) and recommend "
    "by Hamming search.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        from hashgnn import __version__

        typer.echo(f"hashgnn {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    # No docstring: typer would show it instead of the app's help.
    pass


def _register() -> None:
    # Imported here so that `import hashgnn.cli` stays cheap and each stage owns its commands.
    from hashgnn.cli import bench, data, evaluate, experiment, export, recommend, serve, train  # noqa: F401


_python_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
    # Data warnings are messages for the user (what was dropped, how many), not code locations.
    if issubclass(category, DataWarning):
        print(f"warning: {message}", file=sys.stderr)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


def _terminate(signum: int, frame: object) -> None:
    interrupt.request()
    raise KeyboardInterrupt


# The arguments of this invocation, for commands that start copies of themselves (train --nproc).
ARGV: list[str] = []


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``hashgnn`` console script."""
    ARGV[:] = list(sys.argv[1:] if argv is None else argv)
    # Large per-step tensors otherwise cost a page fault per page, every step (hashgnn/memory.py).
    keep_freed_memory()
    _register()
    warnings.showwarning = _show_warning
    # `kill`, job schedulers and `timeout` send SIGTERM: stop as on Ctrl-C, so an experiment
    # records its invocation as interrupted (training keeps its last epoch checkpoint either way).
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main else None
    # Ctrl-C too, so that both record the request (hashgnn/interrupt.py) besides raising.
    previous_int = signal.signal(signal.SIGINT, _terminate) if in_main else None
    try:
        app(args=argv, standalone_mode=True)
    except HashgnnError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        # The library turns the failures it expects into HashgnnError; this is the last line, so that
        # a refusal of the system (full disk, read-only folder) never ends in a traceback.
        where = f"{e.filename}: " if e.filename else ""
        print(
            f"error: {where}{e.strerror or e} (the operation was stopped; files already written are intact)",
            file=sys.stderr,
        )
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception:
        # A stop request whose KeyboardInterrupt was swallowed on the way (by a destructor, or in
        # the middle of a third-party import that then fails when retried) is still an interruption.
        if interrupt.requested():
            print("interrupted", file=sys.stderr)
            sys.exit(130)
        raise
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
            signal.signal(signal.SIGINT, previous_int if previous_int is not None else signal.default_int_handler)
