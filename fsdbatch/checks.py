"""Checks shared by `fsd batch`, `fsd gather` and `fsd table1`, each failing with one line (InputError).

    short, clip, describe     user values in messages, always bounded (a YAML alias bomb or a huge JSON
                              value must never be expanded into a message)
    read_object, read_snapshot  the JSON records of a sweep folder (sweep.json, done.json, metrics.json,
                              run.json), with what is wrong with them and where
"""
from __future__ import annotations

import reprlib
from pathlib import Path

from fsd2d.errors import InputError
from fsd2d.io import read_object  # noqa: F401  (re-exported: the sweep code reads its JSON through it)

MESSAGE_MAX = 80  # characters of one user value inside a message
NAME_MAX = 255  # a run folder's name: one path component on common filesystems

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


SNAPSHOT_KINDS = {"command": str, "swept": list, "runs": list, "folder": str, "index": int, "params": dict}


def read_snapshot(out: Path, fields: tuple[str, ...] = ("command", "swept", "runs"),
                  run_fields: tuple[str, ...] = ("folder", "index", "params")) -> dict:
    """`out`/sweep.json (written by `fsd batch`) with the `fields` and, in each of its runs, the `run_fields`
    the caller reads (of the kinds in SNAPSHOT_KINDS); a run's folder must be a plain folder name."""
    out = Path(out)
    path = out / "sweep.json"
    if not out.is_dir():
        raise InputError(f"{out} {'is not a folder' if out.exists() else 'does not exist'}: give a folder "
                         "written by `fsd batch`")
    if not path.exists():
        raise InputError(f"{out} has no sweep.json: not a folder written by `fsd batch`")
    doc = read_object(path)

    def bad(problem: str) -> InputError:
        return InputError(f"{path}: {problem}; rerun `fsd batch` on the sweep file to rewrite it")

    for key in dict.fromkeys(("runs", *fields)):
        if key not in doc:
            raise bad(f"no '{key}'")
        if not isinstance(doc[key], SNAPSHOT_KINDS[key]):
            raise bad(f"'{key}' should be a {SNAPSHOT_KINDS[key].__name__}, got {describe(doc[key])}")
    if not all(isinstance(k, str) for k in doc.get("swept", [])):
        raise bad("'swept' should list parameter names")
    for i, run in enumerate(doc["runs"]):
        if not isinstance(run, dict):
            raise bad(f"runs[{i}] should be an object, got {describe(run)}")
        for key in dict.fromkeys(("folder", *run_fields)):
            kind = SNAPSHOT_KINDS[key]
            if not isinstance(run.get(key), kind) or isinstance(run.get(key), bool):
                raise bad(f"runs[{i}] has no {kind.__name__} '{key}'")
        name = run["folder"]
        if name in ("", ".", "..") or "/" in name or "\\" in name or len(name) > NAME_MAX:
            raise bad(f"runs[{i}].folder {short(name)} is not a folder name")
    return doc
