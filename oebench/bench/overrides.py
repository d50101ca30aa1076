"""A benchmark with the command line's overrides: a new value, the parsed one unchanged.

The overridden benchmark's settings are checked by the rules a file's values meet
(``oebench.bench.validation.settings_problems``), so ``--recall nan`` is refused as
``recall = nan`` in the file is.

``--set KEY=VALUE`` (``Overrides.settings``) sets one value of the file by its path:
``training.<setting>`` (the ``[training]`` default, for every training that does not set its
own), ``trainings.<name>.<setting>``, ``trainings.<name>.objective.<option>`` and
``trainings.<name>.outliers.<option>``, ``<list>.<key>.<option>`` for ``id_datasets``,
``models``, ``detectors`` and ``ood_datasets`` (e.g. ``ood_datasets.gaussian.n``), and the
top-level ``seeds``, ``protocol``, ``resamples``, ``recall``, ``fpr_rule`` and
``ensemble``. The values are appended to the benchmark's text as a comment, so the
overridden benchmark has its own digest
in the results store and says what was changed."""

from __future__ import annotations

import dataclasses
import difflib
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from oebench.bench.matrix import TRAINING_SETTINGS, Benchmark, Ref, Training
from oebench.errors import UnknownNameError, UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: the command-line option that sets each overridable field
OPTIONS = {"seeds": "--seed", "detectors": "--detectors", "fpr_rule": "--fpr-rule",
           "recall": "--recall"}  # fmt: skip


@dataclass(frozen=True)
class Overrides:
    """What ``oebench run`` may change: seeds, detectors (comma-separated wildcards), OE from
    scratch, and the FPR column's recall level and threshold rule."""

    seeds: tuple[int, ...] = ()
    detectors: str | None = None
    oe_scratch: bool = False
    fpr_rule: str | None = None
    recall: float | None = None
    #: ``--set KEY=VALUE`` pairs, in order (see ``with_settings``)
    settings: tuple[tuple[str, Any], ...] = ()


def overridden(bench: Benchmark, overrides: Overrides) -> Benchmark:
    """``bench`` with ``overrides`` applied (``bench`` itself when there are none); a value the
    file could not hold either is a UserError naming its option."""
    changes: dict[str, Any] = {}
    if overrides.settings:
        bench = with_settings(bench, dict(overrides.settings))
    if overrides.seeds:
        changes["seeds"] = list(dict.fromkeys(overrides.seeds))
    if overrides.detectors is not None:
        changes["detectors"] = [Ref(n) for n in select_detectors(overrides.detectors)]
    if overrides.fpr_rule is not None:
        changes["fpr_rule"] = overrides.fpr_rule
    if overrides.recall is not None:
        changes["recall"] = overrides.recall
    if not changes and not overrides.oe_scratch:
        return bench
    new = dataclasses.replace(bench, **changes) if changes else bench
    new = new.oe_from_scratch() if overrides.oe_scratch else new
    check_overridden(new, set(changes))
    return new


def check_overridden(bench: Benchmark, changed: set[str]) -> None:
    """Check ``bench``'s settings once; a line about a changed field names its option."""
    from oebench.bench.validation import raise_problems, settings_problems

    lines = settings_problems(bench)
    own = [_option_line(line, changed) for line in lines]
    if any(line is not None for line in own):  # the command line's values, without the file
        raise_problems([line for line in own if line is not None])
    raise_problems(lines, bench.source)


def _option_line(line: str, changed: set[str]) -> str | None:
    """``recall = nan: ...`` -> ``--recall nan: ...`` for a changed field; else None."""
    for name in changed:
        if line.startswith(f"{name} = "):
            return f"{OPTIONS[name]} {line[len(name) + 3 :]}"
        if line.startswith((f"{name}[", f"'{name}'")):
            return f"{OPTIONS[name]}: {line}"
    return None


def select_detectors(patterns: str) -> list[str]:
    """Registered detector names matching comma-separated wildcards, in order."""
    from oebench.registry.lookup import list_detectors

    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    if not wanted:
        raise UserError(
            f"--detectors {patterns!r} names no detector: give comma-separated names or "
            "wildcards, e.g. --detectors 'msp,energy*'"
        )
    names: list[str] = []
    for pattern in wanted:
        found = list_detectors(pattern)
        if not found:
            raise UnknownNameError("detector", pattern, list_detectors())
        names += [n for n in found if n not in names]
    return names


# -- --set KEY=VALUE ------------------------------------------------------------------------------
#: top-level settings ``--set`` may change (a Benchmark field each)
TOP_KEYS = ("seeds", "protocol", "resamples", "recall", "fpr_rule", "ensemble")
#: the component lists whose entries' options ``--set <list>.<key>.<option>`` changes
REF_KEYS = ("id_datasets", "models", "detectors", "ood_datasets")
KEY_FORMS = (
    "training.<setting>, trainings.<name>.<setting>, trainings.<name>.objective.<option>, "
    "trainings.<name>.outliers.<option>, <id_datasets|models|detectors|ood_datasets>.<key>."
    f"<option>, {', '.join(TOP_KEYS)}"
)


def parse_settings(items: Iterable[str]) -> tuple[tuple[str, Any], ...]:
    """``("training.epochs=1", ...)`` -> ``(("training.epochs", 1), ...)``: each value a TOML
    value (``1``, ``0.5``, ``true``, ``[0, 1]``, ``"text"``; anything else a bare string),
    one value per key."""
    pairs: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key, text = key.strip(), text.strip()
        if not sep or not key or not text:
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. --set training.epochs=1")
        if key in pairs:
            raise UserError(f"--set {key}: given twice; give one value per key")
        try:
            pairs[key] = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            pairs[key] = text
    return tuple(pairs.items())


def with_settings(bench: Benchmark, settings: dict[str, Any]) -> Benchmark:
    """``bench`` with each ``--set`` value (checked as the file's values are: one line per
    problem, naming the ``--set`` key); its text records the values, so its digest is its own."""
    from oebench.bench.validation import component_problems, raise_problems, settings_problems
    from oebench.registry.options import toml_text

    new = bench
    for key, value in settings.items():
        new = _with_setting(new, key, value)
    lines = settings_problems(new)
    lines += component_problems(new) if not lines else []
    if lines:
        given = ", ".join(f"--set {k}={toml_text(v)}" for k, v in settings.items())
        raise_problems(lines, f"{bench.source or bench.name} with {given}")
    record = json.dumps(settings, sort_keys=True, default=str)
    return dataclasses.replace(new, text=f"{bench.text.rstrip()}\n# --set: {record}\n")


def _with_setting(bench: Benchmark, key: str, value: Any) -> Benchmark:
    parts = key.split(".")
    head = parts[0]
    if head in TOP_KEYS and len(parts) == 1:
        return dataclasses.replace(bench, **{head: value})
    if head == "training" and len(parts) == 2:
        return _with_default(bench, _setting_name(key, parts[1]), value)
    if head == "trainings" and len(parts) in (3, 4):
        names = list(dict.fromkeys(n for x in bench.trainings for n in (x.family, x.name) if n))
        t = _named(key, "training", parts[1], names)  # a family: every one of its sources
        trainings = [_set_training(key, x, parts[2:], value) if t in (x.name, x.family) else x
                     for x in bench.trainings]  # fmt: skip
        return dataclasses.replace(bench, trainings=trainings)
    if head in REF_KEYS and len(parts) == 3:
        refs: list[Ref] = getattr(bench, head)
        entry = _named(key, head.rstrip("s").replace("_", " "), parts[1], [r.key for r in refs])
        new = [_set_option(r, parts[2], value) if r.key == entry else r for r in refs]
        return dataclasses.replace(bench, **{head: new})
    close = difflib.get_close_matches(head, [*TOP_KEYS, *REF_KEYS, "training", "trainings"], 1)
    hint = f" Did you mean {close[0]!r}?" if close and close[0] != head else ""
    raise UserError(f"--set {key}: unknown key.{hint} Keys: {KEY_FORMS}")


def _named(key: str, kind: str, name: str, names: list[str]) -> str:
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UserError(
            f"--set {key}: the benchmark has no {kind} {name!r}.{hint} It has: {', '.join(names)}"
        )
    return name


def _setting_name(key: str, name: str) -> str:
    if name not in TRAINING_SETTINGS:
        close = difflib.get_close_matches(name, list(TRAINING_SETTINGS), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UserError(
            f"--set {key}: unknown training setting {name!r}.{hint} "
            f"Settings: {', '.join(sorted(TRAINING_SETTINGS))}"
        )
    return name


def _set_option(ref: Ref, option: str, value: Any) -> Ref:
    return dataclasses.replace(ref, options=tuple(sorted({**ref.kwargs, option: value}.items())))


def _set_training(key: str, t: Training, rest: list[str], value: Any) -> Training:
    if len(rest) == 1:
        name = _setting_name(key, rest[0])
        return dataclasses.replace(t, settings=tuple(sorted({**t.params, name: value}.items())))
    if rest[0] == "objective":
        return dataclasses.replace(t, objective=_set_option(t.objective, rest[1], value))
    if rest[0] == "outliers" and t.outliers is not None:
        return dataclasses.replace(t, outliers=_set_option(t.outliers, rest[1], value))
    raise UserError(
        f"--set {key}: training {t.name!r} has no {rest[0]!r} to set options of "
        "(objective, or outliers where the training has them)"
    )


def _with_default(bench: Benchmark, name: str, value: Any) -> Benchmark:
    """The ``[training]`` default ``name`` set to ``value``: every training that does not set
    its own ``name`` in the file gets it (without the file's text: a training whose value is
    the old default's)."""
    own = _own_settings(bench)
    trainings = []
    for t in bench.trainings:
        mine = own.get(t.family or t.name) if own is not None else None
        inherits = (
            name not in mine if mine is not None else t.params.get(name) == bench.defaults.get(name)
        )
        if inherits:
            t = dataclasses.replace(t, settings=tuple(sorted({**t.params, name: value}.items())))
        trainings.append(t)
    defaults = {**bench.defaults, name: value}
    return dataclasses.replace(bench, trainings=trainings, defaults=defaults)


def _own_settings(bench: Benchmark) -> dict[str, set[str]] | None:
    """The settings each ``[[trainings]]`` entry of the file gives itself, by its name (a
    family's for all its sources; None without the file's text)."""
    try:
        entries = tomllib.loads(bench.text).get("trainings", []) if bench.text else None
    except tomllib.TOMLDecodeError:
        return None
    if not isinstance(entries, list):
        return None
    return {str(e.get("name")): set(e) for e in entries if isinstance(e, dict)}
