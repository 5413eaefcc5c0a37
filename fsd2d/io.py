"""Output folders that are never half-written, and the provenance record run.json."""
from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
from PIL import Image

PACKAGES = ("fsd", "torch", "numpy", "scikit-image", "diffusers", "transformers", "matplotlib", "typer")


@contextlib.contextmanager
def atomic_output_dir(out: Path):
    """Yield a temporary sibling folder; on success it replaces `out` in one rename, on error it vanishes.

    An existing `out` is kept untouched until the new results are complete.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
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
    ffmpeg plugin) need e.g. ".tmp.mp4".
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def jsonable(obj):
    """Dataclasses, enums, paths, tensors and non-finite floats -> plain JSON values."""
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
        return str(obj)  # "inf" / "nan": JSON has no such numbers
    if hasattr(obj, "tolist"):
        return jsonable(obj.tolist())
    return obj


def write_json(path: Path, data) -> None:
    """JSON with dataclasses/enums/tensors made plain; written atomically."""
    text = json.dumps(jsonable(data), indent=2) + "\n"
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
