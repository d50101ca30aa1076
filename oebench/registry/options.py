"""Component options checked against their factory: names against its signature, values
against its annotations (strictly, with pydantic; imported only when a value is checked).
The one option checker: ``oebench.bench.validation`` reports its lines with a benchmark's other
problems, ``create_*`` raises the first."""

from __future__ import annotations

import difflib
import inspect
import typing
from collections.abc import Callable
from typing import Any

from oebench.registry.plugins import Component


def option_problems(
    comp: Component, options: dict[str, Any], where: str, *positional: str, types: bool = True
) -> list[str]:
    """A line per option the factory does not accept or (with ``types``) whose value its
    annotation rejects."""
    try:
        sig = inspect.signature(comp.factory)
    except (TypeError, ValueError):
        return []
    params = {
        name: p
        for name, p in sig.parameters.items()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and name not in positional
    }
    takes_any = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    hints = _hints(comp.factory) if types else {}
    lines = []
    for name, value in options.items():
        if name not in params:
            if not takes_any:
                close = difflib.get_close_matches(name, params, n=1, cutoff=0.5)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                lines.append(
                    f"{where}: unknown option {name!r}{hint}. Options it accepts: "
                    f"{', '.join(params) or 'none'}"
                )
            continue
        message = _nan_problem(value) or _type_problem(hints.get(name), value)
        if message:
            lines.append(f"{where}: {name} = {toml_text(value)}: {message}")
    return lines


def _hints(factory: Callable) -> dict[str, Any]:
    """Resolved annotations of a factory (a class's ``__init__``), ``Annotated`` ranges kept
    (``Annotated[int, Field(ge=1)]``); {} when they do not resolve."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:  # unresolvable forward references: fall back to no type checks
        return {}


def _nan_problem(value: Any) -> str | None:
    """NaN anywhere in a value (a list or table too) means nothing to any component."""
    if isinstance(value, float) and value != value:
        return "NaN is not a number any option can use"
    items = value.values() if isinstance(value, dict) else value
    if isinstance(value, (dict, list, tuple)):
        return next((found for v in items if (found := _nan_problem(v))), None)
    return None


def _type_problem(annotation: Any, value: Any) -> str | None:
    """Why ``value`` does not fit ``annotation`` (None when it does or cannot be checked); a
    float option is finite unless its annotation allows more (``Field(allow_inf_nan=True)``)."""
    if annotation is None or annotation is Any:
        return None
    from pydantic import ConfigDict, TypeAdapter, ValidationError

    try:
        adapter = TypeAdapter(annotation, config=ConfigDict(strict=True, allow_inf_nan=False))
    except Exception:  # a type pydantic cannot build a validator for
        return None
    try:
        adapter.validate_python(value)
    except ValidationError as exc:
        if isinstance(value, (list, tuple)) and _fits_lax(annotation, value):
            return None  # a TOML array for a tuple parameter
        return str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
    return None


def _fits_lax(annotation: Any, value: Any) -> bool:
    from pydantic import ConfigDict, TypeAdapter, ValidationError

    try:
        TypeAdapter(annotation, config=ConfigDict(allow_inf_nan=False)).validate_python(value)
    except ValidationError:
        return False
    return True


def toml_text(value: Any) -> str:
    """A value as it reads in TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)
