"""Up-front checks of a benchmark: settings (a pydantic schema) and every component's options
(the factories' own annotations), so that no mistake surfaces after hours of training."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    model_validator,
)

from oebench.bench.matrix import MAX_IMAGES, TRAINING_SETTINGS, Setting
from oebench.errors import UserError
from oebench.registry.options import option_problems, toml_text

if TYPE_CHECKING:
    from oebench.bench.matrix import Benchmark, Ref

#: the largest seed SQLite's INTEGER (signed 64 bits) can hold
MAX_SEED = 2**63 - 1
Positive = Annotated[int, Field(ge=1)]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


class _TrainingChecks(BaseModel):
    """What ``TrainingSettings`` checks besides each setting's own type and range."""

    model_config = ConfigDict(strict=True, extra="allow")

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> _TrainingChecks:
        if getattr(self, "nesterov", False) and getattr(self, "momentum", 0.9) == 0:
            raise ValueError("nesterov = true needs momentum > 0 (or set nesterov = false)")
        budget = getattr(self, "outlier_budget", None)
        if budget is not None and budget_problem(budget):
            raise ValueError(budget_problem(budget))
        return self


def budget_problem(budget: Any) -> str:
    """What is wrong with an ``outlier_budget`` value ("" when nothing): a count (int >= 1)
    or a fraction of the outlier source (float in (0, 1])."""
    if type(budget) is int and 1 <= budget <= MAX_IMAGES:
        return ""
    if type(budget) is float and 0 < budget <= 1:
        return ""
    return (
        f"outlier_budget = {budget!r}: give a count of outliers (an integer >= 1) "
        "or a fraction of the outlier source (a number in (0, 1], e.g. 0.1)"
    )


def _annotation(setting: Setting) -> Any:
    """The pydantic type of one declared training setting (a float one is finite)."""
    kind = Literal[setting.kind] if isinstance(setting.kind, tuple) else setting.kind
    bounds: dict[str, Any] = {"ge": setting.ge, "gt": setting.gt, "lt": setting.lt}
    bounds |= {"le": setting.le, "allow_inf_nan": False if kind is float else None}
    if any(v is not None for v in bounds.values()):
        kind = Annotated[kind, Field(**{k: v for k, v in bounds.items() if v is not None})]
    return kind | None if setting.optional else kind


#: types and ranges of the settings of one training (``[training]`` and ``[[trainings]]``),
#: from their declaration (``TRAINING_SETTINGS``); the keyed ones are required
TrainingSettings: type[BaseModel] = create_model(
    "TrainingSettings",
    __base__=_TrainingChecks,
    **{
        name: (_annotation(s), ... if s.keyed else s.default)
        for name, s in TRAINING_SETTINGS.items()
    },
)


class BenchmarkSettings(BaseModel):
    """Types and ranges of the top-level settings of a benchmark file."""

    model_config = ConfigDict(strict=True, extra="allow")

    name: str = ""
    description: str = ""
    seeds: Annotated[list[Seed], Field(min_length=1)] = [0]
    protocol: Literal["full", "oe-paper", "full-spectrum"] = "full"
    resamples: Annotated[int, Field(ge=1, le=100_000)] = 10
    recall: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = 0.95
    fpr_rule: Literal["nearest", "first"] = "nearest"


class ExecutorTable(BaseModel):
    """The ``[executor]`` table: where a benchmark's cells run unless the command says."""

    model_config = ConfigDict(strict=True, extra="forbid")

    name: Literal["local", "dask", "ray"] = "local"
    workers: Positive | None = None
    address: str | None = None
    gpus_per_task: Annotated[float, Field(ge=0, le=1024, allow_inf_nan=False)] = 0.0
    #: each cell's forward passes split by rows into this many tasks (same numbers)
    shards: Annotated[int, Field(ge=1, le=4096)] = 1


def problems(model: type[BaseModel], data: dict[str, Any], where: str) -> list[str]:
    """One line per value of ``data`` that ``model`` rejects, prefixed by ``where``."""
    try:
        model.model_validate(data)
    except ValidationError as exc:
        return [_line(where, err, data) for err in exc.errors()]
    return []


def _line(where: str, err: Any, data: dict[str, Any]) -> str:
    loc = list(err["loc"])
    msg = err["msg"].replace("Value error, ", "")
    prefix = f"{where}: " if where else ""
    if not loc:
        return prefix + msg
    key, value = str(loc[0]), data.get(str(loc[0]), err.get("input"))
    if len(loc) > 1 and isinstance(loc[1], int):
        key, value = f"{key}[{loc[1]}]", err.get("input")
    return f"{prefix}{key} = {toml_text(value)}: {msg}"


def seed_problems(seeds: Iterable[Any], where: str) -> list[str]:
    """A line per seed that is not an integer in [0, 2**63 - 1], and per repeated seed."""
    seeds = list(seeds)
    lines = problems(BenchmarkSettings, {"seeds": seeds}, where)
    repeated = sorted({s for s in seeds if isinstance(s, int) and seeds.count(s) > 1})
    if repeated:
        lines.append(f"{where}{': ' if where else ''}seeds repeat {', '.join(map(str, repeated))}")
    return lines


def unknown_keys(
    where: str,
    given: Iterable[Any],
    allowed: Iterable[str],
    elsewhere: dict[str, str] | None = None,
) -> list[str]:
    """One line naming the keys of a table (``where``: its prefix, e.g. ``"training 'oe': "``)
    that it does not allow, each with the nearest allowed key (difflib, as names get one) or
    where it belongs (``elsewhere``: key -> place), then every key it allows."""
    import difflib

    allowed = sorted(set(allowed))
    unknown = sorted({str(k) for k in given} - set(allowed))
    if not unknown:
        return []
    elsewhere, named = elsewhere or {}, []
    for key in unknown:
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        if key in elsewhere:
            named.append(f"{key} ({elsewhere[key]})")
        else:
            named.append(f"{key} (did you mean {close[0]!r}?)" if close else key)
    return [f"{where}unknown key(s) {', '.join(named)}; allowed keys: {', '.join(allowed)}"]


# -- the whole benchmark, against the registry ------------------------------------------------
def check_benchmark(bench: Benchmark, models: bool = True) -> None:
    """Raise one UserError listing every problem found before any work starts; ``models``:
    also build every model (needs torch; the runner does it before it first builds one)."""
    found = settings_problems(bench) + component_problems(bench) + data_problems(bench)
    if not found and models:  # models need their ID data's classes and shape
        found = model_problems(bench)
    raise_problems(found, bench.source)


def _forward_once(net: Any, shape: tuple[int, int, int], classes: int | None = None) -> str:
    """One forward pass on two random images (eval mode, no gradients): a model that cannot
    run with these options fails here, not at the start of a cell. Returns what is wrong
    with its logits, a plugin's bug ("" if nothing): not ``(2, classes)``, or not finite."""
    import torch

    from oebench.contracts.data import example_inputs  # images in [0, 1], or token ids for text

    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            logits = net.forward_head(net.forward_features(example_inputs(shape)))
    except RuntimeError as exc:
        raise ValueError(f"a test forward pass failed: {exc}") from exc
    finally:
        net.train(was_training)
    size = tuple(getattr(logits, "shape", ()))
    if classes is not None and size != (2, classes):
        return f"its logits for 2 inputs are {size}, not (2, {classes}): one per ID class"
    if not bool(torch.isfinite(logits).all()):
        return "its logits for 2 random inputs are not finite"
    return ""


def model_problems(bench: Benchmark) -> list[str]:
    """Build every model once for each ID dataset's classes and shape (cheap, no training):
    option values its factory rejects are problems of the file."""
    from oebench.registry.lookup import create_dataset, get_component

    lines = []
    for id_ref in bench.id_datasets:
        source = create_dataset(id_ref.name, **id_ref.kwargs)
        for ref in bench.models:
            comp = get_component("model", ref.name)
            label = f"model {ref.key!r} on {id_ref.key!r}"
            try:
                net = comp.factory(source.num_classes, tuple(source.shape), **ref.kwargs)
                wrong = _forward_once(net, tuple(source.shape), source.num_classes)
                if wrong:
                    lines.append(f"{label} (plugin {comp.plugin!r}): {wrong}")
            except (UserError, ValueError, TypeError) as exc:
                lines.append(f"{label}: {exc}")
            except Exception as exc:  # a plugin's bug: name it
                lines.append(f"{label} (plugin {comp.plugin!r}) failed: {_broken(exc)}")
    return lines


#: the top-level settings a Benchmark holds, checked by ``BenchmarkSettings``
TOP_SETTINGS = ("name", "description", "protocol", "resamples", "recall", "fpr_rule")


def settings_problems(bench: Benchmark) -> list[str]:
    """Settings of a Benchmark built in Python or changed by the command line (files are
    checked when parsed already): a value is refused alike wherever it came from."""
    values = {name: getattr(bench, name) for name in TOP_SETTINGS}
    lines = problems(BenchmarkSettings, values, "") + seed_problems(bench.seeds, "")
    for key in ("id_datasets", "models", "detectors", "ood_datasets"):
        if not getattr(bench, key):
            lines.append(f"'{key}' must be a non-empty list")
    if not isinstance(bench.ensemble, bool):
        lines.append(f"ensemble = {bench.ensemble!r}: must be true or false")
    elif bench.ensemble and len(bench.seeds) < 2:
        lines.append(
            "ensemble = true needs at least two seeds (its members are a training's models)"
        )
    if (bench.protocol == "full-spectrum") != bool(bench.csid_datasets):
        lines.append("protocol = 'full-spectrum' and 'csid_datasets' go together")
    names = [t.name for t in bench.trainings]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        lines.append(f"training name(s) {', '.join(map(repr, repeated))} used twice")
    for t in bench.trainings:
        lines += problems(TrainingSettings, t.params, f"training {t.name!r}")
    return lines


def raise_problems(lines: list[str], source: str = "") -> None:
    """One line for one problem; a count and one line per problem for several."""
    if not lines:
        return
    where = f"{source}: " if source else ""
    if len(lines) == 1:
        raise UserError(where + lines[0])
    raise UserError(f"{where}{len(lines)} problems:\n  " + "\n  ".join(lines))


def component_problems(bench: Benchmark) -> list[str]:
    """Unknown names, unknown options, option types and values, and objectives without outliers."""
    lines: list[str] = []
    for ref in bench.id_datasets + bench.ood_datasets + bench.csid_datasets:
        lines += _ref_problems("dataset", ref)
    for ref in bench.models:
        lines += _ref_problems("model", ref, "num_classes", "shape")
    for ref in bench.detectors:
        lines += _ref_problems("detector", ref)
    for t in bench.trainings:
        found = _ref_problems("objective", t.objective, where=f"training {t.name!r}: objective")
        lines += found
        if t.outliers is not None:
            lines += _ref_problems(
                "outlier source", t.outliers, where=f"training {t.name!r}: outliers"
            )
        if not found:
            lines += _objective_problems(t)
    return lines


def _ref_problems(kind: str, ref: Ref, *positional: str, where: str = "") -> list[str]:
    """Problems of one named component: its name, its options' names and types, its values."""
    from oebench.registry.lookup import get_component

    where = where or kind
    try:
        comp = get_component(kind, ref.name)
    except UserError as exc:
        return [f"{where}: {exc}" if where != kind else str(exc)]
    label = f"{where} {ref.key!r}" if where == kind else f"{where} {ref.name!r}"
    lines = option_problems(comp, ref.kwargs, label, *positional)
    if lines or positional:
        return lines
    try:  # factories are cheap; a value they reject is a problem of the file
        comp.factory(**ref.kwargs)
    except (UserError, ValueError, TypeError) as exc:
        lines.append(f"{label}: {exc}")
    except Exception as exc:  # a plugin's bug: name it, keep checking the rest
        lines.append(f"{label} (plugin {comp.plugin!r}) failed: {_broken(exc)}")
    return lines


def _broken(exc: BaseException) -> str:
    from oebench.core.failures import describe_exception

    return describe_exception(exc)


def _objective_problems(t: Any) -> list[str]:
    from oebench.registry.lookup import create_objective

    objective = create_objective(t.objective.name, **t.objective.kwargs)
    if getattr(objective, "uses_outliers", False) and t.outliers is None:
        return [
            f"training {t.name!r}: objective {t.objective.name!r} needs 'outliers' "
            "(an outlier source)"
        ]
    return []


def data_problems(bench: Benchmark) -> list[str]:
    """Every dataset and outlier source whose files are missing, and ID sets without labels."""
    from oebench.registry.lookup import create_dataset, create_outlier_source, get_component

    lines: list[str] = []
    sources = [("dataset", r) for r in bench.id_datasets + bench.ood_datasets]
    sources += [("dataset", r) for r in bench.csid_datasets]
    sources += [("outlier source", t.outliers) for t in bench.trainings if t.outliers]
    seen: set[tuple[str, Any]] = set()
    for kind, ref in sources:
        if (kind, ref) in seen or _ref_problems(kind, ref):
            continue  # an unknown name or a bad option is reported already
        seen.add((kind, ref))
        make = create_dataset if kind == "dataset" else create_outlier_source
        try:
            source = make(ref.name, **ref.kwargs)
            source.files()
            if ref in bench.id_datasets and (
                not source.num_classes or "train" not in source.splits
            ):
                lines.append(
                    f"dataset {ref.key!r} cannot be an ID dataset: it has no labelled train split"
                )
            if ref in bench.csid_datasets:
                lines += _csid_classes(bench, ref, source)
        except UserError as exc:  # missing files, or a plugin's own check of its options
            lines.append(f"{kind} {ref.key!r}: {exc}")
        except Exception as exc:  # a plugin's bug: name it, keep checking the rest
            plugin = get_component(kind, ref.name).plugin
            lines.append(f"{kind} {ref.key!r} (plugin {plugin!r}) failed: {_broken(exc)}")
    return lines


def _csid_classes(bench: Benchmark, ref: Ref, source: Any) -> list[str]:
    """A covariate-shifted ID set is labelled with the ID classes (its accuracy is reported)."""
    from oebench.registry.lookup import create_dataset

    theirs = {r.key: create_dataset(r.name, **r.kwargs).num_classes for r in bench.id_datasets}
    wrong = sorted(k for k, n in theirs.items() if n != source.num_classes)
    if not source.num_classes or wrong:
        return [f"csid set {ref.key!r} has {source.num_classes or 'no'} classes, the ID "
                f"dataset {wrong[0] if wrong else ''!r} {theirs.get(wrong[0]) if wrong else ''}: "
                "a covariate-shifted ID set keeps the ID labels"]  # fmt: skip
    return []


def size_problems(
    bench: Benchmark,
    train_size: Callable[[Ref], int | None],
    test_size: Callable[[Ref], int | None],
    outlier_size: Callable[[Ref], int | None] | None = None,
) -> list[str]:
    """Values that depend on the data's sizes, known once the splits are loaded (before any
    training): a detector needing more ID training samples than a set has (its ``min_train``,
    e.g. knn's ``k``), an OOD set's ``n`` larger than its test split, a training's count
    ``outlier_budget`` larger than its outlier source. ``train_size`` (of an ID dataset),
    ``test_size`` (of an OOD set) and ``outlier_size`` (of an outlier source) are asked only
    where needed; None: unknown."""
    from oebench.registry.lookup import create_detector

    lines: list[str] = []
    needs = {}
    for ref in bench.detectors:
        need = getattr(create_detector(ref.name, **ref.kwargs), "min_train", None)
        if isinstance(need, int) and need > 1:
            needs[ref.key] = need
    for id_ref in bench.id_datasets if needs else []:
        size = train_size(id_ref)
        for key, need in needs.items() if size is not None else []:
            if need > size:
                lines.append(f"detector {key!r} needs at least {need} ID training samples, "
                             f"but {id_ref.key!r} has {size}")  # fmt: skip
    for ref in bench.ood_datasets:
        n = ref.kwargs.get("n")
        size = test_size(ref) if isinstance(n, int) and not isinstance(n, bool) else None
        if size is not None and n > size:
            lines.append(f"dataset {ref.key!r}: n = {n}, but its test split has only {size} "
                         "images; give n <= that, or leave n out for all of them")  # fmt: skip
    for t in bench.trainings if outlier_size is not None else []:
        budget = t.params.get("outlier_budget")
        if t.outliers is None or type(budget) is not int:  # a fraction always fits
            continue
        size = outlier_size(t.outliers)
        if size is not None and budget > size:
            lines.append(f"training {t.name!r}: outlier_budget = {budget} is larger than the "
                         f"outlier source {t.outliers.key!r}, which has {size} images; give "
                         f"at most {size}, or a fraction such as 0.5")  # fmt: skip
    return lines


def chance_warning(what: str, accuracy: float, num_classes: int | None) -> str | None:
    """A warning when an ID model's test accuracy (%) is near chance: within a tenth of the way
    from chance (100 / classes) to 100%. Its OOD numbers then mean little."""
    if not num_classes or num_classes < 2:
        return None
    chance = 100.0 / num_classes
    if accuracy >= chance + 0.1 * (100.0 - chance):
        return None
    return (
        f"Warning: {what}: ID test accuracy {accuracy:.1f}% is near chance "
        f"({chance:.1f}% for {num_classes} classes); its OOD numbers mean little. "
        "Train longer (epochs, max_train) or check the data."
    )


# -- the [published] table --------------------------------------------------------------------
#: where a row sits: [published] gives defaults for every row, a row its own
PUBLISHED_PLACES = {
    "training": "training",
    "detector": "detector",
    "ood_dataset": "OOD set",
    "model": "model",
    "id_dataset": "ID dataset",
}
PUBLISHED_TABLE_KEYS = ("source", "runs", "rows", "spread", *PUBLISHED_PLACES)


def published_values() -> tuple[str, ...]:
    """The columns a published row may hold numbers for (metrics in %, ``id_accuracy``)."""
    from oebench.metrics import METRICS

    return (*METRICS, "id_accuracy")


def published_problems(value: Any, names: dict[str, list[str]]) -> list[str]:
    """One line per problem of a ``[published]`` table; ``names`` holds, per place
    (``training``, ``detector``, ``ood_dataset``, ``model``, ``id_dataset``), the names this
    benchmark has there (``ood_dataset``: its OOD sets, ``mean`` and its group means)."""
    if value is None:
        return []
    if not isinstance(value, dict):
        return ["[published] must be a table: source, runs, rows (see `[[published.rows]]`)"]
    lines = [_unknown_key("[published]", k, PUBLISHED_TABLE_KEYS) for k in value]
    lines = [line for line in lines if line]
    source = value.get("source")
    if source is None:
        lines.append("[published]: needs 'source': where the numbers come from (authors, year, "
                     "table), as a string")  # fmt: skip
    elif not isinstance(source, str) or not source.strip():
        lines.append(f"[published]: source = {toml_text(source)}: must be a non-empty string")
    runs = value.get("runs")
    if runs is not None and (type(runs) is not int or not 1 <= runs <= 100_000):
        lines.append(f"[published]: runs = {toml_text(runs)}: the number of runs the published "
                     "numbers average, an integer >= 1")  # fmt: skip
    defaults = {k: value[k] for k in (*PUBLISHED_PLACES, "spread") if k in value}
    lines += _spread_problem("[published]", defaults.get("spread"))
    lines += _place_problems("[published]", defaults, names)  # once, not for every row
    rows = value.get("rows")
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        return lines + ["[published] needs rows: one [[published.rows]] table per result"]
    seen: dict[tuple, int] = {}
    allowed = (*PUBLISHED_PLACES, "spread", *published_values())
    for i, row in enumerate(rows):
        where = f"published.rows[{i}]"
        lines += [line for line in (_unknown_key(where, k, allowed) for k in row) if line]
        lines += _spread_problem(where, row.get("spread"))
        lines += _place_problems(where, row, names)
        full = {**defaults, **row}
        needed = [k for k in ("training", "detector", "ood_dataset") if k not in full]
        lines += [f"{where}: needs '{key}' (here or in [published])" for key in needed]
        numbers = [k for k in published_values() if k in row]
        if not numbers:
            lines.append(f"{where}: gives no number; give one or more of "
                         f"{', '.join(published_values())} (in %)")  # fmt: skip
        for k in numbers:
            v = row[k]
            if type(v) not in (int, float) or not 0 <= v <= 100:
                lines.append(f"{where}: {k} = {toml_text(v)}: must be a number from 0 to 100 (%)")
        place = tuple(str(full.get(key, "")) for key in PUBLISHED_PLACES)
        if place in seen:
            lines.append(
                f"{where} repeats published.rows[{seen[place]}] (the same training, "
                "detector, OOD set, model and ID dataset): give each result once"
            )
        seen.setdefault(place, i)
    return lines


def _place_problems(where: str, given: dict[str, Any], names: dict[str, list[str]]) -> list[str]:
    """Names in ``given`` (training, detector, ...) that are not this benchmark's."""
    import difflib

    lines = []
    for key, kind in PUBLISHED_PLACES.items():
        name = given.get(key)
        known = names.get(key, [])
        if name is None or name == "":
            continue
        if not isinstance(name, str):
            lines.append(f"{where}: {key} = {toml_text(name)}: must be a name (a string)")
        elif name not in known:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            article = "an" if kind[0] in "aeiouIO" else "a"
            lines.append(
                f"{where}: {key} = {name!r} is not {article} {kind} of this benchmark.{hint} "
                f"Its {kind}s: {', '.join(known) or '(none)'}"
            )
    return lines


def _unknown_key(where: str, key: str, known: Iterable[str]) -> str:
    """A line for ``key`` when it is not one of ``known`` ("" when it is)."""
    import difflib

    known = list(known)
    if key in known:
        return ""
    if key == "aupr":  # the paper's AUPR: average precision with OOD as the positive class
        hint = " Did you mean: aupr_out? (the OE paper's AUPR has OOD as the positive class)"
    else:
        close = difflib.get_close_matches(str(key), known, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return f"{where}: unknown key {key!r}.{hint} Known: {', '.join(known)}"


def _spread_problem(where: str, spread: Any) -> list[str]:
    if spread is None or (type(spread) in (int, float) and 0 <= spread <= 100):
        return []
    return [f"{where}: spread = {toml_text(spread)}: the published numbers' spread (std over "
            "runs) in points, a number from 0 to 100"]  # fmt: skip
