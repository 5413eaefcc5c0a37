"""Parsers of the command line's text values (seeds '0-3', enum values, comma lists), shared by the CLI and the
configs' `from_flags`. Each raises InputError with a one-line message that names the flag.

The `to_*` functions take a value either typed (a tuple of seeds, an enum member) or as the command line's text, so
a config's `from_flags` accepts both."""
from __future__ import annotations

import re

from fsd2d.errors import InputError, check_finite

__all__ = ["parse_seeds", "parse_enum", "parse_enum_list", "parse_range", "parse_floats", "to_seeds", "to_enum",
           "to_enum_tuple", "to_floats"]


def parse_seeds(text: str) -> tuple[int, ...]:
    """'0-3' -> (0, 1, 2, 3); '0,2,5' -> (0, 2, 5); mixes like '0-3,8' too. Order kept, repeats dropped.
    Seeds lie in [0, 2**31) and a run takes at most MAX_SEEDS of them (checked before expanding a range)."""
    from fsd2d.sampling import MAX_SEEDS, SEED_LIMIT, check_seeds

    seeds: dict[int, None] = {}
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise InputError(f"bad --seeds {text!r}: use non-negative integers like '0-3', '0,2,5' or '0-3,8'")
        if m.group(2) is not None and int(m.group(2)) < int(m.group(1)):
            raise InputError(f"bad --seeds {text!r}: the range {part} is reversed; write it "
                             f"'{int(m.group(2))}-{int(m.group(1))}'")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi >= SEED_LIMIT or hi - lo >= MAX_SEEDS:
            raise InputError(f"bad --seeds {text!r}: seeds must be below {SEED_LIMIT} (2**31), "
                             f"at most {MAX_SEEDS} of them")
        seeds.update(dict.fromkeys(range(lo, hi + 1)))
    check_seeds(tuple(seeds))
    return tuple(seeds)


def parse_enum(text: str, enum_cls, flag: str):
    """One value of a str Enum, or an InputError listing the allowed values."""
    allowed = [e.value for e in enum_cls]
    if text.strip() not in allowed:
        raise InputError(f"unknown {flag} value {text.strip()!r}; allowed: {', '.join(allowed)}")
    return enum_cls(text.strip())


def parse_enum_list(text: str, enum_cls, flag: str) -> tuple:
    """'fsd,sds' -> (enum_cls('fsd'), enum_cls('sds')); each part as parse_enum."""
    return tuple(parse_enum(part, enum_cls, flag) for part in text.split(","))


def parse_range(text: str, flag: str) -> tuple[float, float]:
    """'lo,hi' -> (lo, hi), both finite."""
    values = parse_floats(text, flag)
    if len(values) != 2:
        raise InputError(f"bad {flag} {text!r}: give 'lo,hi'")
    return values


def parse_floats(text: str, flag: str) -> tuple[float, ...]:
    """'0,0.5,1' -> (0.0, 0.5, 1.0); every value finite."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"bad {flag} {text!r}: use a comma list of numbers like '0,0.5,1'") from None
    for v in values:
        check_finite(flag, v)
    return values


def to_seeds(value) -> tuple[int, ...]:
    """Seeds as text ('0-3', parse_seeds), one int, or a sequence of ints (checked where the config is)."""
    if isinstance(value, str):
        return parse_seeds(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return tuple(value)
    raise InputError(f"bad --seeds {value!r}: use non-negative integers like '0-3', '0,2,5' or '0-3,8'")


def to_enum(value, enum_cls, flag: str):
    """A member of `enum_cls`, or its value as text (parse_enum)."""
    return value if isinstance(value, enum_cls) else parse_enum(str(value), enum_cls, flag)


def to_enum_tuple(value, enum_cls, flag: str) -> tuple:
    """Members of `enum_cls` from a comma list ('fsd,sds') or a sequence of members or values."""
    if isinstance(value, str):
        return parse_enum_list(value, enum_cls, flag)
    if not isinstance(value, (list, tuple)):
        return parse_enum_list(str(value), enum_cls, flag)
    return tuple(to_enum(v, enum_cls, flag) for v in value)


def to_floats(value, flag: str) -> tuple[float, ...]:
    """Numbers from a comma list ('0,0.5,1', parse_floats), one number, or a sequence of numbers."""
    if isinstance(value, str):
        return parse_floats(value, flag)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (value,)
    if isinstance(value, (list, tuple)):
        return parse_floats(",".join(str(v) for v in value), flag)
    raise InputError(f"bad {flag} {value!r}: use a comma list of numbers like '0,0.5,1'")
