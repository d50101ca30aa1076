"""What ``oebench show NAME`` prints: a component's plugin, description, citation, options
with types and defaults, and an example line for a benchmark file."""

from __future__ import annotations

import inspect
import os
import re
import typing
from dataclasses import dataclass, field
from typing import Any

from oebench.errors import UnknownNameError

#: positional parameters the harness fills in, per kind (not options a user sets)
POSITIONAL = {"model": ("num_classes", "shape")}
#: where a component of each kind goes in a benchmark file
TOML_KEY = {
    "dataset": "ood_datasets",
    "model": "models",
    "detector": "detectors",
    "outlier source": "outliers",
    "objective": "objective",
}
_CITATION = re.compile(r"\(([^();]*\b(?:19|20)\d\d[a-z]?)(?:;[^()]*)?\)")  # "(A, V 2021; note)"


@dataclass
class Option:
    """One option of a component's factory."""

    name: str
    type: str
    default: Any = inspect.Parameter.empty
    #: the annotation itself, for a placeholder of the right type (``Annotated`` kept)
    annotation: Any = field(default=None, repr=False, compare=False)

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty

    def as_dict(self) -> dict[str, Any]:
        default = None if self.required else self.default
        return {"name": self.name, "type": self.type, "required": self.required, "default": default}


@dataclass
class Description:
    """Everything ``oebench show`` says about one component."""

    kind: str
    name: str
    plugin: str
    description: str
    citation: str
    doc: str
    options: list[Option] = field(default_factory=list)
    example: str = ""
    #: a benchmark's file (``oebench show NAME --toml`` prints it, ``oebench init`` copies it)
    file: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "plugin": self.plugin,
            "description": self.description,
            "citation": self.citation,
            "doc": self.doc,
            "options": [o.as_dict() for o in self.options],
            "example": self.example,
            **({"file": self.file} if self.file else {}),
        }


def describe_all(name: str) -> list[Description]:
    """Descriptions of every component called ``name`` (a name may be a dataset and an outlier
    source); an UnknownNameError with suggestions when there is none."""
    from oebench.registry.plugins import KINDS, get_plugin_manager

    pm = get_plugin_manager()
    found = [describe(pm.components(kind)[name]) for kind in KINDS if name in pm.components(kind)]
    if not found:
        every = {n for kind in KINDS for n in pm.components(kind)}
        raise UnknownNameError("component", name, every)
    return found


def describe(comp: Any) -> Description:
    """The description of one registered component."""
    options = options_of(comp.factory, POSITIONAL.get(comp.kind, ()))
    doc = _doc(comp.factory)
    return Description(
        kind=comp.kind,
        name=comp.name,
        plugin=comp.plugin,
        description=comp.description,
        citation=str(comp.meta.get("citation") or _citation(comp.description) or _citation(doc)),
        doc=doc,
        options=options,
        example=example(comp.kind, comp.name, options, comp.factory),
        file=_file(comp) if comp.kind == "benchmark" else "",
    )


def _file(comp: Any) -> str:
    """Where a registered benchmark's file is (the source a plugin's benchmark names)."""
    try:
        target = comp.factory() if callable(comp.factory) else comp.factory
    except Exception:  # a broken plugin's benchmark: nothing to show
        return ""
    if isinstance(target, (str, os.PathLike)):
        return str(target)
    return str(getattr(target, "source", "") or "")


def options_of(factory: Any, positional: tuple[str, ...] = ()) -> list[Option]:
    """The keyword options a factory accepts, with their annotated types and defaults."""
    if not callable(factory):
        return []
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return []
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        hints = typing.get_type_hints(target)
        extras = typing.get_type_hints(target, include_extras=True)
    except Exception:  # unresolvable annotations: show them as written
        hints, extras = {}, {}
    return [
        Option(name, _type_name(hints.get(name, p.annotation)), p.default, extras.get(name))
        for name, p in sig.parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name not in positional
    ]


def _type_name(annotation: Any) -> str:
    if annotation is inspect.Parameter.empty:
        return "any"
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _citation(description: str) -> str:
    """``Hendrycks & Gimpel 2017`` from ``"max softmax probability (Hendrycks & Gimpel 2017)"``."""
    match = _CITATION.search(description)
    return match.group(1) if match else ""


def _doc(factory: Any) -> str:
    doc = inspect.getdoc(factory) if callable(factory) else None
    return (doc or "").strip()


def example(kind: str, name: str, options: list[Option], factory: Any = None) -> str:
    """Lines to paste into a benchmark file, one per place the component can go (a labelled
    dataset: ``id_datasets`` and ``ood_datasets``): every required option with a placeholder
    of its type (``path = "<path>"``: replace it), every option with a TOML default."""
    if kind == "benchmark":
        return f"oebench run {name}\noebench init {name} my-{name}.toml    # a copy to edit"
    values = [f"{o.name} = {placeholder(o)}" for o in options if o.required]
    values += [
        f"{o.name} = {toml_value(o.default)}"
        for o in options
        if not o.required and toml_value(o.default) is not None
    ]
    ref = f'{{ name = "{name}"{", " if values else ""}{", ".join(values)} }}'
    required = [o.name for o in options if o.required]
    fill = f"; set {', '.join(required)}" if required else ""
    if kind in ("objective", "outlier source"):
        return f"{TOML_KEY[kind]} = {ref}    # in a [[trainings]] entry{fill}"
    lines = [f"{key} = [{ref}]" for key in places(kind, factory)]
    return "\n".join(lines) + (f"    # {fill[2:]}" if fill else "")


def places(kind: str, factory: Any = None) -> list[str]:
    """The benchmark-file lists a component of ``kind`` can go in: a dataset with classes
    and a training split (its ``num_classes``, declared or set from its options) is an ID
    dataset as well as an OOD set."""
    if kind != "dataset":
        return [TOML_KEY[kind]]
    return ["id_datasets", "ood_datasets"] if _labelled(factory) else ["ood_datasets"]


def _labelled(factory: Any) -> bool:
    """Whether a dataset factory makes sources with classes to train on (ID datasets)."""
    if not inspect.isclass(factory):
        return False
    classes = inspect.getattr_static(factory, "num_classes", None)
    splits = inspect.getattr_static(factory, "splits", ())
    if isinstance(classes, property) or isinstance(splits, property):
        return True  # decided by the options (a Hugging Face dataset with labels)
    if isinstance(classes, int) and classes > 0:
        return "train" in tuple(splits)
    try:  # set in __init__ from what it wraps (``holdout``)
        return "train" in tuple(splits) and "self.num_classes =" in inspect.getsource(factory)
    except (OSError, TypeError):
        return False


def placeholder(option: Option) -> str:
    """A TOML value of the option's type that its type check accepts, to be replaced:
    ``"<path>"`` for a string, the lower bound of a range for a number, a literal's first."""
    return _placeholder(option.annotation, option.name) or f'"<{option.name}>"'


def _placeholder(annotation: Any, name: str) -> str | None:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        low = next((_lower(m) for m in args[1:] if _lower(m) is not None), None)
        base = args[0]
        if low is not None and base in (int, float):
            return toml_value(base(low))
        return _placeholder(base, name)
    if origin is typing.Literal:
        return toml_value(args[0])
    if origin in (list, tuple) or annotation in (list, tuple):
        item = _placeholder(args[0], name) if args else None
        return "[" + (item or f'"<{name}>"') + "]"
    if origin is dict or annotation is dict:
        return "{}"
    if args and type(None) in args:  # Optional[...] / X | None
        return next((p for a in args if a is not type(None) and (p := _placeholder(a, name))), None)
    if args:  # a union: its first member
        return _placeholder(args[0], name)
    if annotation is bool:
        return "false"
    if annotation is int:
        return "1"
    if annotation is float:
        return "1.0"
    if annotation is str:
        return f'"<{name}>"'
    return None


def _lower(meta: Any) -> float | None:
    """The smallest value a range annotation (``Field(ge=1)``, ``annotated_types.Gt(0)``)
    allows, roughly: ``ge``, or ``gt`` + 1."""
    found = [meta, *getattr(meta, "metadata", [])]
    for m in found:
        for attr, step in (("ge", 0), ("gt", 1)):
            value = getattr(m, attr, None)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return value + step
    return None


def toml_value(value: Any) -> str | None:
    """A default as TOML; None for values TOML cannot write (None, objects)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (list, tuple)):
        items = [toml_value(v) for v in value]
        return None if None in items else f"[{', '.join(items)}]"  # type: ignore[arg-type]
    return None


def render(console: Any, desc: Description) -> None:
    """Print one description with rich."""
    from rich.markup import escape
    from rich.table import Table

    console.print(f"[bold]{escape(desc.name)}[/] ({desc.kind}, plugin {escape(desc.plugin)})")
    if desc.description:
        console.print(desc.description, markup=False)
    if desc.citation:
        console.print(f"Citation: {desc.citation}", markup=False)
    if desc.doc and desc.doc != desc.description:
        console.print(desc.doc, markup=False, style="dim")
    if desc.options:
        table = Table(title="options")
        for col in ("option", "type", "default"):
            table.add_column(col)
        for o in desc.options:
            default = "(required)" if o.required else repr(o.default)
            table.add_row(escape(o.name), escape(o.type), escape(default))
        console.print(table)
    elif desc.kind != "benchmark":
        console.print("No options.")
    if desc.file:
        console.print("File:", desc.file, markup=False)
    lines = desc.example.splitlines()
    console.print("Example:", lines[0] if lines else "", markup=False)
    for line in lines[1:]:
        console.print("        ", line, markup=False)
