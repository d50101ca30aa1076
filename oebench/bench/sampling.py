"""The ``outlier_sampling`` setting of a training: its rules, their options and defaults, and
the check of a benchmark's value (``oebench.execute.sampling`` draws the outliers).

::

    outlier_sampling = {name = "ntom", pool = 20000, quantile = 0.125, score = "msp"}
    outlier_sampling = {name = "poem", pool = 20000, sigma = 20.0, sigma_n = 0.5, conf = 3.0}
"""

from __future__ import annotations

import difflib
from typing import Any

from oebench.errors import UserError

#: rule name -> (option -> default)
SAMPLERS: dict[str, dict[str, Any]] = {
    "random": {},
    "ntom": {"pool": None, "quantile": 0.125, "score": "msp"},
    # POEM (Ming et al., ICML 2022): the defaults of github.com/deeplearning-wisc/poem
    "poem": {"pool": None, "id_pool": None, "sigma": 20.0, "sigma_n": 0.5, "conf": 3.0},
}
SCORES = ("msp", "energy")


def check_sampling(value: Any, where: str) -> None:
    """A one-line ``UserError`` unless ``value`` is a valid ``outlier_sampling`` setting."""
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise UserError(f"{where}: outlier_sampling must be a table with a 'name'")
    from oebench.bench.validation import unknown_keys

    name = value["name"]
    if name not in SAMPLERS:
        close = difflib.get_close_matches(name, SAMPLERS, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(
            f"{where}: unknown outlier_sampling {name!r}{hint}; known: {', '.join(SAMPLERS)}"
        )
    allowed = ["name", *SAMPLERS[name]]
    unknown = unknown_keys(f"{where}: outlier_sampling {name!r} has ", value, allowed)
    if unknown:
        raise UserError(unknown[0])
    if name == "ntom":
        defaults = SAMPLERS["ntom"]
        quantile, pool = value.get("quantile", defaults["quantile"]), value.get("pool")
        if not isinstance(quantile, (int, float)) or not 0 <= quantile < 1:
            raise UserError(f"{where}: ntom quantile must be in [0, 1), got {quantile!r}")
        if pool is not None and (not isinstance(pool, int) or pool < 1):
            raise UserError(f"{where}: ntom pool must be a positive integer, got {pool!r}")
        if value.get("score", defaults["score"]) not in SCORES:
            raise UserError(f"{where}: ntom score must be one of {', '.join(SCORES)}")
    if name == "poem":
        _check_poem(value, where)


def _check_poem(value: dict[str, Any], where: str) -> None:
    """POEM's pools are positive integers (or absent); ``sigma``, ``sigma_n``, ``conf`` > 0."""
    for key in ("pool", "id_pool"):
        size = value.get(key)
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise UserError(f"{where}: poem {key} must be a positive integer, got {size!r}")
    for key in ("sigma", "sigma_n", "conf"):
        number = value.get(key, SAMPLERS["poem"][key])
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not number > 0:
            raise UserError(f"{where}: poem {key} must be a positive number, got {number!r}")
