"""Named benchmarks: every ``*.toml`` shipped in oebench's ``benchmarks/`` folder."""

from __future__ import annotations

from importlib import resources

import oebench


@oebench.hookimpl
def register_benchmarks(register):
    folder = resources.files("oebench_benchmarks")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            first = entry.read_text().splitlines()[0] if entry.read_text() else ""
            register(
                entry.name[: -len(".toml")], str(entry), description=first.lstrip("# ").strip()
            )
