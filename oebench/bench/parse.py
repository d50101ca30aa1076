"""Benchmark definitions: TOML files naming the matrix to run, parsed into plain dataclasses."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from oebench.bench.groups import group_label, group_problems, groups_in_text
from oebench.bench.matrix import (
    DEFAULT_TRAINING,
    TRAINING_SETTINGS,
    Benchmark,
    Published,
    PublishedRow,
    Ref,
    Training,
)
from oebench.bench.sampling import check_sampling
from oebench.errors import UserError

__all__ = ["load_benchmark", "parse_benchmark"]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def parse_ref(value: Any, where: str, base: Path | None = None) -> Ref:
    """A component reference from a name or a table; relative paths resolve against ``base``."""
    if isinstance(value, str):
        return Ref(value)
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        opts = {k: v for k, v in value.items() if k not in ("name", "label")}
        if base is not None:
            opts = resolve_paths(opts, base)
        return Ref(
            value["name"],
            tuple(sorted(opts.items(), key=lambda kv: kv[0])),
            str(value.get("label", "")),
        )
    raise UserError(f"{where}: expected a name or a table with 'name', got {value!r}")


#: options that name files or folders: relative values resolve against the benchmark's folder
PATH_OPTIONS = ("root", "data_dir", "data_files")


def resolve_paths(options: dict[str, Any], base: Path) -> dict[str, Any]:
    """``options`` with relative paths made absolute against ``base``; ``path`` only where it
    names something that exists there (it may be a Hugging Face hub name)."""
    out = dict(options)
    for key in PATH_OPTIONS:
        if key in out:
            out[key] = _absolute(out[key], base)
    path = out.get("path")
    if isinstance(path, str) and not Path(path).is_absolute() and (base / path).exists():
        out["path"] = str((base / path).resolve())
    return out


def _absolute(value: Any, base: Path) -> Any:
    """Strings become absolute paths; lists and tables are resolved item by item."""
    if isinstance(value, str):
        return value if Path(value).expanduser().is_absolute() else str((base / value).resolve())
    if isinstance(value, list):
        return [_absolute(v, base) for v in value]
    if isinstance(value, dict):
        return {k: _absolute(v, base) for k, v in value.items()}
    return value


class _Problems(list):
    """Problems found in a benchmark file, collected so that all are reported at once."""

    def attempt(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args)``, or None with its UserError recorded."""
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            self.append(str(exc))
            return None


def _refs(data: dict, key: str, base: Path | None, problems: _Problems) -> list[Ref]:
    values = data.get(key)
    if not isinstance(values, list) or not values:
        problems.append(f"'{key}' must be a non-empty list")
        return []
    refs = [problems.attempt(parse_ref, v, key, base) for v in values]
    refs = [r for r in refs if r is not None]
    keys = [r.key for r in refs]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        problems.append(f"'{key}' lists {', '.join(dupes)} twice; give one a 'label'")
    return refs


def _training(data: Any, defaults: dict, base: Path | None, problems: _Problems) -> list[Training]:
    """One training, or one per outlier source where ``outliers`` is a list (``oe/<label>``)."""
    from oebench.bench.validation import TrainingSettings, unknown_keys
    from oebench.bench.validation import problems as schema_problems

    where = "training"
    if not isinstance(data, dict) or "name" not in data or "objective" not in data:
        problems.append("[[trainings]]: every training needs 'name' and 'objective'")
        return []
    if not isinstance(data["name"], str) or not data["name"]:
        problems.append(f"[[trainings]]: name = {data['name']!r}: must be a non-empty string")
        return []
    where = f"{where} {data['name']!r}"
    problems += unknown_keys(f"{where}: ", data, [*TRAINING_SETTINGS, *TRAINING_KEYS])
    own = {k: v for k, v in data.items() if k in TRAINING_SETTINGS}
    settings = {**defaults, **own}
    # a bad [training] default is reported once, for [training], not for every training
    inherited = {line.split(": ", 1)[1] for line in _default_lines(defaults)}
    for line in schema_problems(TrainingSettings, settings, where):
        message = line.split(": ", 1)[1]
        if message not in inherited or message.split(" =")[0] in own:
            problems.append(line)
    if "outlier_sampling" in own:  # outlier mining (oebench.execute.sampling)
        problems.attempt(check_sampling, own["outlier_sampling"], where)
        if "outliers" not in data:
            problems.append(f"{where}: outlier_sampling needs 'outliers' (an outlier source)")
    objective = problems.attempt(parse_ref, data["objective"], where, base)
    if objective is None:
        return []
    name, init, params = data["name"], data.get("from"), tuple(sorted(settings.items()))
    if not isinstance(data.get("outliers"), list):  # one source (or none): the training itself
        outliers = (
            problems.attempt(parse_ref, data["outliers"], where, base)
            if "outliers" in data
            else None
        )
        return [Training(name, objective, outliers, init, params)]
    refs = _outlier_refs(data["outliers"], where, base, problems)
    return [Training(f"{name}/{r.key}", objective, r, init, params, name, r.key) for r in refs]


def _outlier_refs(values: list, where: str, base: Path | None, problems: _Problems) -> list[Ref]:
    """The outlier sources of an ``outliers = [...]`` list (the outlier axis), labels unique."""
    if not values:
        problems.append(f"{where}: outliers = []: list at least one outlier source")
        return []
    refs = [problems.attempt(parse_ref, v, f"{where}: outliers[{i}]", base)
            for i, v in enumerate(values)]  # fmt: skip
    refs = [r for r in refs if r is not None]
    keys = [r.key for r in refs]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        problems.append(f"{where}: outliers lists {', '.join(dupes)} twice; give one a 'label'")
        return []
    return refs


def _default_lines(defaults: dict) -> list[str]:
    from oebench.bench.validation import TrainingSettings, problems

    return problems(TrainingSettings, defaults, "[training]")


#: the keys of a ``[[trainings]]`` entry besides its settings
TRAINING_KEYS = ("name", "objective", "outliers", "from")

KNOWN_KEYS = {
    "name",
    "description",
    "id_datasets",
    "models",
    "trainings",
    "detectors",
    "ood_datasets",
    "seeds",
    "protocol",
    "resamples",
    "training",
    "ood_groups",
    "recall",
    "fpr_rule",
    "executor",
    "published",
    "csid_datasets",
    "ensemble",
}


def parse_benchmark(text: str, source: str = "<string>", base: Path | None = None) -> Benchmark:
    """Parse and validate a benchmark TOML document (component names are checked later).

    Every problem found is reported in one UserError, one line each; relative paths in
    component options resolve against ``base`` (the file's folder).
    """
    from oebench.bench.validation import raise_problems, unknown_keys

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{source}: invalid TOML: {exc}") from None
    found = _Problems()
    setting = "a training setting: put it under [training] or in a [[trainings]] entry"
    elsewhere = {k: setting for k in [*TRAINING_SETTINGS, *TRAINING_KEYS]}
    found += unknown_keys("", data, KNOWN_KEYS, elsewhere)
    defaults = _defaults(data, found)
    trainings = _trainings(data, defaults, base, found)
    found += _settings_problems(data)
    executor = data.get("executor", {})
    seeds = data.get("seeds", [0])
    refs = {key: _refs(data, key, base, found) for key in REF_LISTS}
    csid = _refs(data, "csid_datasets", base, found) if "csid_datasets" in data else []
    found += _ensemble_problems(data)
    found += _csid_problems(
        data.get("protocol", "full"), csid, refs["ood_datasets"] + refs["id_datasets"]
    )
    found += group_problems(data.get("ood_groups"), [r.key for r in refs["ood_datasets"]])
    found += _published_problems(data, trainings, refs)
    raise_problems(found + _component_problems(found, trainings, refs), source)
    return Benchmark(
        name=str(data.get("name", Path(source).stem)),
        trainings=trainings,
        seeds=seeds,
        protocol=data.get("protocol", "full"),
        resamples=data.get("resamples", 10),
        recall=data.get("recall", 0.95),
        fpr_rule=data.get("fpr_rule", "nearest"),
        description=str(data.get("description", "")),
        source=source,
        text=text,
        defaults=defaults,
        ood_groups=groups_in_text(text),
        executor=executor if isinstance(executor, dict) else {},
        published=_published(data.get("published")),
        csid_datasets=csid,
        ensemble=data.get("ensemble", False) is True,
        **refs,
    )


def _ensemble_problems(data: dict) -> list[str]:
    """``ensemble = true`` combines a training's models over the seeds: it needs two."""
    value = data.get("ensemble", False)
    if not isinstance(value, bool):
        return [f"ensemble = {value!r}: must be true or false"]
    seeds = data.get("seeds", [0])
    if value and (not isinstance(seeds, list) or len(seeds) < 2):
        return ["ensemble = true needs at least two seeds (its members are a training's models)"]
    return []


def _csid_problems(protocol: Any, csid: list[Ref], others: list[Ref]) -> list[str]:
    """``protocol = "full-spectrum"`` and ``csid_datasets`` go together; their labels differ
    from every OOD and ID set's."""
    if protocol == "full-spectrum" and not csid:
        return ["protocol = 'full-spectrum' needs 'csid_datasets' (covariate-shifted ID sets)"]
    if csid and protocol != "full-spectrum":
        return ["'csid_datasets' needs protocol = 'full-spectrum'"]
    clash = sorted({r.key for r in csid} & {r.key for r in others})
    if clash:
        return [f"{', '.join(clash)} is both a csid set and an ID or OOD set; give it a 'label'"]
    return []


REF_LISTS = ("id_datasets", "models", "detectors", "ood_datasets")


def _published_problems(data: dict, trainings: list[Training], refs: dict) -> list[str]:
    """Problems of the ``[published]`` table: every name it uses must be one of the file's."""
    from oebench.bench.validation import published_problems

    groups = data.get("ood_groups")
    means = ["mean", *(group_label(g) for g in (groups if isinstance(groups, dict) else {}))]
    names = {
        "training": [t.name for t in trainings],
        "detector": [r.key for r in refs["detectors"]],
        "ood_dataset": [r.key for r in refs["ood_datasets"]] + means,
        "model": [r.key for r in refs["models"]],
        "id_dataset": [r.key for r in refs["id_datasets"]],
    }
    return published_problems(data.get("published"), names)


def _published(value: Any) -> Published | None:
    """The checked ``[published]`` table as a value (rows take the table's defaults)."""
    if value is None:
        return None
    from oebench.bench.validation import PUBLISHED_PLACES, published_values

    defaults = {k: value[k] for k in (*PUBLISHED_PLACES, "spread") if k in value}
    rows = []
    for row in value["rows"]:
        full = {**defaults, **row}
        numbers = tuple((k, float(row[k])) for k in published_values() if k in row)
        spread = full.get("spread")
        rows.append(
            PublishedRow(
                **{k: str(full.get(k, "")) for k in PUBLISHED_PLACES},
                values=numbers,
                spread=float(spread) if spread is not None else None,
            )
        )
    return Published(value["source"].strip(), tuple(rows), value.get("runs"))


def _defaults(data: dict, found: _Problems) -> dict[str, Any]:
    """The ``[training]`` defaults every training starts from (its problems go to ``found``)."""
    from oebench.bench.validation import unknown_keys

    defaults = dict(DEFAULT_TRAINING)
    section = data.get("training", {})
    if not isinstance(section, dict):
        found.append("[training] must be a table of settings")
        section = {}
    only = {k: "only in a [[trainings]] entry" for k in TRAINING_KEYS}
    found += unknown_keys("[training] has ", section, TRAINING_SETTINGS, only)
    defaults.update({k: v for k, v in section.items() if k in TRAINING_SETTINGS})
    found += _default_lines(defaults)
    return defaults


def _settings_problems(data: dict) -> list[str]:
    """Problems of the top-level settings, ``[executor]`` and ``seeds``."""
    from oebench.bench.validation import (
        BenchmarkSettings,
        ExecutorTable,
        problems,
        seed_problems,
        unknown_keys,
    )

    names = ("name", "description", "protocol", "resamples", "recall", "fpr_rule")
    found = problems(BenchmarkSettings, {k: data[k] for k in names if k in data}, "")
    executor = data.get("executor", {})
    if isinstance(executor, dict):
        fields = ExecutorTable.model_fields
        found += unknown_keys("[executor] has ", executor, fields)
        known = {k: v for k, v in executor.items() if k in fields}
        found += problems(ExecutorTable, known, "[executor]")
    else:
        found.append("[executor] must be a table: name, workers, address, gpus_per_task, shards")
    seeds = data.get("seeds", [0])
    if isinstance(seeds, list):
        found += seed_problems(seeds, "")
    else:
        found.append(f"seeds = {seeds!r}: must be a non-empty list of integers")
    return found


def _component_problems(found: list[str], trainings: list[Training], refs: dict) -> list[str]:
    """When the file has problems already, those of its components and data too, so that
    one message lists them all (a file without problems gets these checks at run time)."""
    if not found or not trainings or not all(refs.values()):
        return []
    from oebench.bench.validation import component_problems, data_problems

    partial = Benchmark(name="", trainings=trainings, **refs)
    try:
        return component_problems(partial) + data_problems(partial)
    except Exception:  # best effort: the run-time check reports anything missed here
        return []


def _trainings(data: dict, defaults: dict, base: Path | None, found: _Problems) -> list[Training]:
    """The ``[[trainings]]``: each checked, names unique, ``from`` naming an earlier one."""
    entries = data.get("trainings", [])
    if not isinstance(entries, list) or not entries:
        found.append("needs at least one [[trainings]] entry")
        return []
    trainings = [t for entry in entries for t in _training(entry, defaults, base, found)]
    trainings = _same_source_inits(trainings, found)
    names = [t.name for t in trainings]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        found.append(
            f"training name(s) {', '.join(map(repr, dupes))} used twice; "
            "every training needs its own name"
        )
    for i, t in enumerate(trainings):
        if t.init is not None and t.init not in names[:i]:
            found.append(
                f"training {t.name!r} starts from {t.init!r}, which must be an earlier training"
            )
    return trainings


def _same_source_inits(trainings: list[Training], found: _Problems) -> list[Training]:
    """``from`` naming a training with several outlier sources starts from its expansion with
    the same source (``oe/textures`` from ``pre/textures``); without that source, a problem."""
    from dataclasses import replace

    names = {t.name for t in trainings}
    families: dict[str, dict[str, str]] = {}
    for t in trainings:
        if t.family:
            families.setdefault(t.family, {})[t.source] = t.name
    out = []
    for t in trainings:
        if t.init is not None and t.init not in names and t.init in families:
            label = t.source or (t.outliers.key if t.outliers else "")
            same = families[t.init].get(label)
            if same is None:
                have = ", ".join(families[t.init])
                found.append(
                    f"training {t.name!r} starts from {t.init!r}, which has one training per "
                    f"outlier source ({have}) but none for {label or 'no outliers'!r}; name one "
                    f"in 'from', e.g. {t.init + '/' + next(iter(families[t.init]))!r}"
                )
            else:
                t = replace(t, init=same)
        out.append(t)
    return out


def load_benchmark(name_or_path: str) -> Benchmark:
    """A benchmark by registered name, or from a path to a TOML file."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise UserError(f"benchmark file not found: {path.resolve()}{_registered(path)}")
        return parse_benchmark(read_text(path), str(path), path.resolve().parent)
    from oebench.registry.lookup import get_component

    comp = get_component("benchmark", name_or_path)
    target = comp.factory() if callable(comp.factory) else comp.factory
    if isinstance(target, Benchmark):
        return target
    target = Path(target)
    return parse_benchmark(read_text(target), str(target), target.resolve().parent)


def _registered(path: Path) -> str:
    """A hint when a missing file's name is a registered benchmark's (``benchmarks/x.toml``
    outside a clone of the repository): ``; a registered benchmark is named 'x': ...``."""
    from oebench.registry.lookup import list_benchmarks

    try:
        names = list_benchmarks()
    except Exception:  # a broken registry must not hide the file-not-found message
        return ""
    if path.stem in names:
        return f"; a registered benchmark is named {path.stem!r}: oebench run {path.stem}"
    return ""


def read_text(path: Path) -> str:
    """A benchmark file's text (UTF-8, newlines as ``read_text`` makes them); a file that is
    not text (binary bytes, a NUL, not UTF-8) or cannot be read is one UserError."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read the benchmark file: {exc.strerror or exc}") from None
    at = data.find(b"\x00")
    if at >= 0:
        raise UserError(f"{path}: not a text file (a NUL byte at offset {at}); give a TOML file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "a benchmark file is TOML, which is UTF-8"
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")
