"""The one exception family for bad user input, and the two checks every number a user gives passes through.
The CLI turns an InputError into one line and exit code 2."""
from __future__ import annotations

import math

__all__ = ["InputError", "ModelError", "check_finite", "check_int_range"]


class InputError(ValueError):
    """Input a user can fix (unknown prompt, model, method; out-of-range value). Message: one line."""


def check_finite(name: str, value: float | None) -> None:
    """Reject inf and NaN (a run with them writes NaN images); None ("not given") passes."""
    if value is not None and not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value}")


def check_int_range(name: str, value: int | None, lo: int, hi: int, why: str = "") -> None:
    """`lo <= value <= hi` for an integer a user gives (None passes); `why` ends the message (e.g. the cap's reason)."""
    if value is not None and not lo <= value <= hi:
        raise InputError(f"{name} must be in [{lo}, {hi}]{f' ({why})' if why else ''}, got {value}")


class ModelError(InputError):
    """A model that cannot be used: unknown name, missing weights, unsupported size or dtype."""
