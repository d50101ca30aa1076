"""``python -m oebench.cli``: the ``oebench`` command."""

from oebench.cli import main

main()
