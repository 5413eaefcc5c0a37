"""The `fsd` click group called in this process: a command's exit code and its one-line error, and its
configuration checked without loading its prior (fsdbatch.sweep.check_runs). Knows nothing of sweeps."""
from __future__ import annotations

import collections
import contextlib
import importlib
import io
import sys
from dataclasses import dataclass
from typing import Any

# The click group of the `fsd` app, `typer.main.get_command(app)`: `.commands` maps names to commands whose
# `.params` are click(-like) options (typer may vendor its own click, so only the attributes are relied on).
CliGroup = Any

INTERRUPTED = 130  # what typer returns (standalone_mode=False) when the command saw a KeyboardInterrupt
# Where each command starts its real work: every sweepable command builds and validates its whole
# configuration before it calls this (cli.run_study for the 2D studies; gen-3d).
PRIOR_LOADERS = {"gen-3d": ("fsd3d.gen3d", "load_scene_prior")}
DEFAULT_PRIOR_LOADER = ("fsd2d.priors.load", "load_prior")


@dataclass(frozen=True)
class Invocation:
    exit_code: int
    error: str | None  # the last `error: ...` line the command printed, if any

    def failure(self) -> str | None:
        """None when the command succeeded, else its one-line error."""
        if self.exit_code == INTERRUPTED:
            raise KeyboardInterrupt
        return None if self.exit_code in (0, None) else (self.error or f"exited with code {self.exit_code}")


def invoke_command(cli: CliGroup, args: list[str], quiet: bool = False) -> Invocation:
    """Call the `fsd` group in-process (standalone_mode=False) and keep its last `error:` line
    (with `quiet`, nothing it prints is shown)."""
    tail = StderrTail(io.StringIO() if quiet else sys.stderr)
    with contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.redirect_stderr(tail))
        if quiet:
            stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        code = cli.main(args, prog_name="fsd", standalone_mode=False)
    return Invocation(code if isinstance(code, int) else 0, tail.last_error())


def usage_error(e: Exception) -> str | None:
    """The one line of a click usage error (e.g. --steps abc); None for any other exception."""
    return first_line(e.format_message()) if hasattr(e, "format_message") else None


class PriorReached(Exception):
    """Raised in place of loading the prior: the command built and validated its whole configuration."""


@contextlib.contextmanager
def prior_loading_stopped(command: str):
    """While inside, the command's prior loader raises PriorReached instead of loading anything."""
    module_name, name = PRIOR_LOADERS.get(command, DEFAULT_PRIOR_LOADER)
    module = importlib.import_module(module_name)
    real = getattr(module, name)

    def stop(*args, **kwargs):
        raise PriorReached

    setattr(module, name, stop)
    try:
        yield
    finally:
        setattr(module, name, real)


class StderrTail(io.TextIOBase):
    """Passes everything through to `stream` and remembers the last lines (to find `error: ...`)."""

    def __init__(self, stream):
        self.stream = stream
        self.lines: collections.deque[str] = collections.deque(maxlen=20)
        self.partial = ""

    def write(self, text) -> int:
        if not isinstance(text, str):
            raise TypeError("text stream")  # click probes with b"" to tell text from binary streams
        *done, self.partial = (self.partial + text).split("\n")
        self.lines.extend(done)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self):
        return getattr(self.stream, "encoding", None) or "utf-8"

    @property
    def errors(self):
        return getattr(self.stream, "errors", None) or "strict"

    def last_error(self) -> str | None:
        for line in reversed([*self.lines, self.partial]):
            if line.startswith("error: "):
                return line[len("error: "):].strip()
        return None


def first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), text.strip())
