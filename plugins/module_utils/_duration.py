# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The collection's one reading of a timeout: whole seconds, or a duration string as helm and kubernetes.core take it.

Every timeout option of the modules and every ``*_timeout`` variable of the roles (through the ``duration_seconds``
filter) goes through :func:`to_seconds`, so ``600``, ``"600"``, ``"10m"`` and ``"9m60s"`` mean the same everywhere.
The string form is the one kubernetes.core's ``helm`` module hands to helm's ``--timeout``: Go's duration syntax,
a sequence of decimal numbers each with a unit (``90s``, ``10m``, ``1h30m``, ``1.5h``, ``500ms``); units ``h``,
``m``, ``s``, ``ms``, ``us`` (or ``µs``), ``ns``. A bare number (no unit) is seconds, as in the options' integer form.
A timeout is never negative; a fraction of a second is rounded up, so a positive duration never becomes 0.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError

FORMS = "whole seconds (600) or a duration such as 90s, 10m or 1h30m (units h, m, s, ms, us, ns)"

_UNIT_SECONDS: dict[str, Decimal] = {
    "h": Decimal(3600), "m": Decimal(60), "s": Decimal(1), "ms": Decimal("0.001"),
    "us": Decimal("0.000001"), "\u00b5s": Decimal("0.000001"), "\u03bcs": Decimal("0.000001"),
    "ns": Decimal("0.000000001"),
}
# One term of Go's duration syntax: digits with an optional fraction (".5", "1.", "1.5"), then a unit.
_TERM = re.compile(r"(\d+\.?\d*|\.\d+)(h|ms|m|s|us|\u00b5s|\u03bcs|ns)")
_SECONDS = re.compile(r"\d+")


class DurationError(MlopsError):
    """A timeout that is neither whole seconds nor a duration string."""


def _refuse(option: str, value: object, why: str = "") -> DurationError:
    detail = f" ({why})" if why else ""
    return DurationError(f"{option}: {value!r} is not a timeout{detail}; give {FORMS}.")


def _string_seconds(text: str, option: str, original: object) -> Decimal:
    if _SECONDS.fullmatch(text):
        return Decimal(text)
    if text.startswith(("-", "+")):
        raise _refuse(option, original, "a timeout has no sign" if text[0] == "+" else "a timeout cannot be negative")
    total = Decimal(0)
    position = 0
    while position < len(text):
        term = _TERM.match(text, position)
        if term is None:
            rest = text[position:]
            why = "a number needs a unit after it" if re.fullmatch(r"[\d.]+", rest) else f"cannot read {rest!r}"
            raise _refuse(option, original, why)
        total += Decimal(term.group(1)) * _UNIT_SECONDS[term.group(2)]
        position = term.end()
    return total


def to_seconds(value: object, option: str = "timeout") -> int:
    """Whole seconds (fractions rounded up) for an int, a string of digits, or a duration string; refuses the rest."""
    if isinstance(value, bool) or value is None:
        raise _refuse(option, value)
    if isinstance(value, int):
        if value < 0:
            raise _refuse(option, value, "a timeout cannot be negative")
        return value
    if not isinstance(value, str):
        raise _refuse(option, value, f"a {type(value).__name__}, not a number of seconds or a string")
    text = value.strip()
    if not text:
        raise _refuse(option, value, "it is empty")
    return int(math.ceil(_string_seconds(text, option, value)))


def go_duration(seconds: int) -> str:
    """The form helm's --timeout takes for a number of seconds from :func:`to_seconds`."""
    return f"{seconds}s"
