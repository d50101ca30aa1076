"""The ``oebench`` command line: one module per command group, heavy libraries imported
inside commands (``oebench --help`` stays instant)."""

from oebench.cli.app import cli, main

__all__ = ["cli", "main"]
