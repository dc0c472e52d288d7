"""The ``hashgnn`` command: a thin layer over the Python API.

Each sub-module adds its commands to :data:`app`. User errors (:class:`hashgnn.errors.HashgnnError`)
are printed as one paragraph on stderr with exit status 2, never as a traceback.
"""

from __future__ import annotations

import sys

import typer

from hashgnn.errors import HashgnnError

app = typer.Typer(
    name="hashgnn",
    help="Learn binary codes for users and items with a graph neural network (HashGNN) and recommend "
    "by Hamming search.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    # Imported here so that `import hashgnn.cli` stays cheap and each stage owns its commands.
    from hashgnn.cli import bench, data, evaluate, recommend, train  # noqa: F401


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``hashgnn`` console script."""
    _register()
    try:
        app(args=argv, standalone_mode=True)
    except HashgnnError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
