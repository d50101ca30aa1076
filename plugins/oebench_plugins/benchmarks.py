"""Named benchmarks: every ``*.toml`` shipped in oebench's ``benchmarks/`` folder."""

from __future__ import annotations

import sys
from importlib import resources

import oebench.api as oebench

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@oebench.hookimpl
def register_benchmarks(register):
    for entry in sorted(resources.files("oebench_benchmarks").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            try:
                description = str(tomllib.loads(entry.read_text()).get("description", ""))
            except tomllib.TOMLDecodeError:
                description = "(invalid TOML: `oebench run` reports where)"
            register(entry.name[: -len(".toml")], str(entry), description=description)
