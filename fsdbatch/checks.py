"""User values in messages, always bounded (a YAML alias bomb or a huge JSON value must never be expanded into a
message): shared by `fsd batch`, `fsd gather` and `fsd table1`, each failing with one line (InputError).

    short, clip, describe     a value, a text, a value's kind

The JSON records of a sweep folder are read by fsdbatch.layout.
"""
from __future__ import annotations

import reprlib

MESSAGE_MAX = 80  # characters of one user value inside a message

_REPR = reprlib.Repr()  # bounded work and length however large or deeply nested the value
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict = 2, 4, 4, 4
_REPR.maxstring, _REPR.maxother = MESSAGE_MAX, MESSAGE_MAX


def clip(text: str, limit: int = MESSAGE_MAX) -> str:
    """`text` cut to `limit` characters ('...' marks the cut)."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def short(value) -> str:
    """repr(value), bounded in size and in the work it takes (nested lists are elided, not expanded)."""
    return clip(_REPR.repr(value))


def describe(value) -> str:
    return "nothing" if value is None else f"a {type(value).__name__}"
