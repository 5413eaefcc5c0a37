"""Output folders that are never half-written, and the provenance record run.json."""
from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import math
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
from PIL import Image

from fsd2d.errors import InputError
from fsd2d.folders import Layout, claim

__all__ = ["check_output_dir", "atomic_output_dir", "atomic_path", "jsonable", "read_object", "write_json",
           "run_record", "save_png", "differences"]

PACKAGES = ("fsd", "torch", "numpy", "scikit-image", "diffusers", "transformers", "matplotlib", "typer")


def check_output_dir(path: Path, what: str = "--out") -> None:
    """Refuse, before any work, an output `path` that cannot become a results folder (InputError, one line):
    `path` is a folder, or can be made as one, and a file can be created there.

    Writes nothing that stays: the write test is a temporary file in the folder itself or, when it does not
    exist yet, in its nearest existing parent (root ignores permission bits, so only a real write tells).
    """
    path = Path(path)
    existing = path
    try:
        while not os.path.lexists(existing) and existing != existing.parent:
            existing = existing.parent
        is_dir = existing.is_dir()
    except OSError as e:
        raise InputError(f"{what} {path} cannot be checked ({e.strerror or type(e).__name__})") from None
    if not is_dir:
        if existing == path:
            raise InputError(f"{what} {path} exists and is not a folder")
        raise InputError(f"{what} {path} cannot be created: {existing} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".fsd-write-test-", dir=existing)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        if existing == path:
            raise InputError(f"{what} {path} is not writable ({reason})") from None
        raise InputError(f"{what} {path} cannot be created: no file can be written in {existing} ({reason})"
                         ) from None
    os.close(fd)
    os.unlink(probe)


def _umask() -> int:
    """This process's umask (read from /proc where possible: setting it to read it is not thread-safe)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def usual_mode(folder: bool = False) -> int:
    """What a plain open() / mkdir() would give: 0666 (files) or 0777 (folders) less the umask."""
    return (0o777 if folder else 0o666) & ~_umask()


def _temp_prefix(name: str, pid: int | None = None) -> str:
    """`.NAME.tmp-HOST-PID-` (random characters follow): a temporary names its host and writer's PID, so that
    a later run can tell a killed writer's leftovers (`clear_stale`). Without `pid`: the host's prefix."""
    return f".{name}.tmp-{socket.gethostname()}-" + ("" if pid is None else f"{pid}-")


def clear_stale(parent: Path, name: str) -> None:
    """Remove temporaries of `name` left in `parent` by killed runs: our naming pattern, this host, and a
    writer PID that is no longer alive. Live writers' temporaries and other files are never touched."""
    prefix = _temp_prefix(name)
    with contextlib.suppress(OSError):
        for entry in parent.iterdir():
            m = re.fullmatch(r"(\d+)-.*", entry.name[len(prefix):]) if entry.name.startswith(prefix) else None
            if m and not _alive(int(m.group(1))):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


@contextlib.contextmanager
def atomic_output_dir(out: Path, layout: Layout):
    """Yield a temporary sibling folder; on success it replaces `out` in one rename, on error it vanishes.

    `out` must be absent, empty, or `layout`'s own earlier output holding only its files (fsd2d.folders.claim,
    checked on entry and again just before the swap); anything else is an InputError and is never touched.
    An existing `out` is kept untouched until the new results are complete. Temporaries of killed runs beside
    `out` are cleared first. The folder gets the usual mode (0777 less the umask), as a plain mkdir would.
    """
    out = Path(os.path.normpath(Path(out).absolute()))  # a name to put temporaries beside ("." has none)
    claim(out, layout)
    check_output_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    clear_stale(out.parent, out.name)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(out.name, os.getpid()), dir=out.parent))
    try:
        tmp.chmod(usual_mode(folder=True))
        yield tmp
        claim(out, layout)  # still nothing of anyone else's there
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
    try:
        tmp.rename(out)
    except BaseException:
        if old is not None:
            old.rename(out)  # put the previous results back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(path: Path, suffix: str = ".tmp"):
    """Yield a temporary sibling path to write; it replaces `path` only once the block succeeds.

    `suffix` ends the temporary name: writers that pick the format from the extension (imageio's
    ffmpeg plugin) need e.g. ".tmp.mp4". The file gets the usual mode (0666 less the umask);
    temporaries of `path` left by killed runs are cleared first.
    """
    path = Path(path)
    clear_stale(path.parent, path.name)
    fd, name = tempfile.mkstemp(prefix=_temp_prefix(path.name, os.getpid()), suffix=suffix, dir=path.parent)
    os.fchmod(fd, usual_mode())
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def jsonable(obj):
    """Dataclasses, enums, paths, tensors and non-finite floats (null) -> plain JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # JSON has no inf / NaN: null (an undefined value, e.g. the diversity of one seed)
    if hasattr(obj, "tolist"):
        return jsonable(obj.tolist())
    return obj


def differences(before: dict, now: dict, limit: int = 4) -> list[str]:
    """What differs between two records of settings (plain JSON values, nested dicts flattened to dotted keys),
    as 'key: BEFORE there, NOW here' lines, at most `limit` of them (then '... and N more')."""

    def flat(d, prefix=""):
        items = {}
        for k, v in d.items():
            if isinstance(v, dict):
                items |= flat(v, f"{prefix}{k}.")
            else:
                items[f"{prefix}{k}"] = v
        return items

    a, b = flat(before), flat(now)
    keys = [k for k in dict.fromkeys([*a, *b]) if a.get(k, "(absent)") != b.get(k, "(absent)")]
    shown = [f"{k}: {json.dumps(a.get(k, '(absent)'))} there, {json.dumps(b.get(k, '(absent)'))} here" for k in keys[:limit]]
    return shown + ([f"... and {len(keys) - limit} more"] if len(keys) > limit else [])


def read_object(path: Path) -> dict:
    """The JSON object in `path`; an InputError naming the file when it is missing, truncated or not an object."""
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{path} is missing") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}; "
                         "truncated?)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path} is unreadable ({type(e).__name__})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path} should hold a JSON object, got {'nothing' if doc is None else 'a ' + type(doc).__name__}")
    return doc


def write_json(path: Path, data) -> None:
    """JSON with dataclasses/enums/tensors made plain; written atomically."""
    text = json.dumps(jsonable(data), indent=2, allow_nan=False) + "\n"  # valid JSON: no NaN / Infinity
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def git_commit() -> str | None:
    """The commit of the source tree this package runs from, with '-dirty' if modified; None outside git."""
    here = Path(__file__).resolve().parent
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=here, capture_output=True, text=True, timeout=10)  # noqa: E731
        head = run("rev-parse", "HEAD")
        if head.returncode != 0:
            return None
        dirty = run("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def run_record(command: str, config, extra: dict | None = None) -> dict:
    """What run.json holds: command, full configuration, versions, git commit, time, argv."""
    return {
        "command": command,
        "config": jsonable(config),
        "versions": versions(),
        "git_commit": git_commit(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv,
        **(extra or {}),
    }


def save_png(path: Path, image_hwc: np.ndarray) -> None:
    """Save one [H, W, 3] float image in [0, 1] as an 8-bit PNG."""
    Image.fromarray((np.clip(image_hwc, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)).save(path)
