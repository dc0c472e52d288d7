"""`hashgnn bench` commands (placeholder until its stage lands)."""

from hashgnn.cli import app  # noqa: F401
