"""Ranges of the first-party plugins' options, as annotations the option checker applies
(``Annotated`` with annotated-types' constraints, which pydantic reads)."""

from __future__ import annotations

from typing import Annotated

from annotated_types import Ge, Gt, Le

#: how many images a source makes or takes: at least one
Count = Annotated[int, Ge(1)]
#: a fraction of a whole: more than nothing, at most all of it
Fraction = Annotated[float, Gt(0), Le(1)]
