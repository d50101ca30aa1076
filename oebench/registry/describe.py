"""What ``oebench show NAME`` prints: a component's plugin, description, citation, options
with types and defaults, and an example line for a benchmark file."""

from __future__ import annotations

import inspect
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
_CITATION = re.compile(r"\(([^()]*\b(?:19|20)\d\d[a-z]?)\)")


@dataclass
class Option:
    """One option of a component's factory."""

    name: str
    type: str
    default: Any = inspect.Parameter.empty

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
    )


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
    except Exception:  # unresolvable annotations: show them as written
        hints = {}
    return [
        Option(name, _type_name(hints.get(name, p.annotation)), p.default)
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
    """A line to paste into a benchmark file, with every option that has a TOML default."""
    if kind == "benchmark":
        return f"oebench run {name}"
    values = [
        f"{o.name} = {toml_value(o.default)}"
        for o in options
        if not o.required and toml_value(o.default) is not None
    ]
    ref = f'{{ name = "{name}"{", " if values else ""}{", ".join(values)} }}'
    key = TOML_KEY[kind]
    if kind in ("objective", "outlier source"):
        return f"{key} = {ref}    # in a [[trainings]] entry"
    return f"{key} = [{ref}]"


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
    console.print("Example:", desc.example, markup=False)
