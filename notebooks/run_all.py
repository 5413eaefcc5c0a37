"""Execute the notebooks in this folder with nbclient and write executed copies (with their figures).

    python notebooks/run_all.py                   # all notebooks, full settings -> outputs/notebooks/
    python notebooks/run_all.py --small           # tiny settings (FSD_NOTEBOOK_SMALL=1), as the tests
    python notebooks/run_all.py fig3 table1       # only notebooks whose name starts with these

The kernel runs with this Python interpreter (a kernel spec for `sys.executable` is registered in a
temporary folder for the run), in a temporary working directory; the notebooks themselves write nothing.
Exit code 1 if any notebook raised.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
KERNEL_NAME = "fsd-notebooks"  # registered on the fly for sys.executable (see python_kernel)
CELL_TIMEOUT_S = 1200


def notebooks(prefixes: list[str] | None = None) -> list[Path]:
    """The notebooks in this folder, sorted; with prefixes, those whose name starts with one of them."""
    paths = sorted(HERE.glob("*.ipynb"))
    return [p for p in paths if not prefixes or any(p.name.startswith(x) for x in prefixes)]


@contextlib.contextmanager
def python_kernel():
    """A kernel spec named KERNEL_NAME that starts ipykernel with this interpreter, on JUPYTER_PATH while in use.

    A fresh install (`pip install -e ".[test]"`) has ipykernel but may have no `python3` kernel spec, or one
    pointing at another interpreter; registering our own avoids both."""
    from ipykernel.kernelspec import install

    old = os.environ.get("JUPYTER_PATH")
    with tempfile.TemporaryDirectory() as prefix:
        install(kernel_name=KERNEL_NAME, display_name="fsd notebooks", prefix=prefix)
        os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(Path(prefix) / "share" / "jupyter"), old]))
        try:
            yield KERNEL_NAME
        finally:
            if old is None:
                os.environ.pop("JUPYTER_PATH", None)
            else:
                os.environ["JUPYTER_PATH"] = old


@contextlib.contextmanager
def small_flag(small: bool):
    """Set (or clear) FSD_NOTEBOOK_SMALL for the kernels started inside."""
    old = os.environ.get("FSD_NOTEBOOK_SMALL")
    os.environ["FSD_NOTEBOOK_SMALL"] = "1" if small else "0"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("FSD_NOTEBOOK_SMALL", None)
        else:
            os.environ["FSD_NOTEBOOK_SMALL"] = old


def execute(nb, kernel_name: str, cwd: Path, small: bool, timeout: int = CELL_TIMEOUT_S):
    """Run a notebook (nbformat node, filled in place with outputs) top to bottom in `cwd`; returns it.
    A cell that raises raises nbclient's CellExecutionError, after the outputs so far are in `nb`."""
    with small_flag(small):
        NotebookClient(nb, timeout=timeout, kernel_name=kernel_name, resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("only", nargs="*", help="run only notebooks whose name starts with one of these")
    parser.add_argument("--small", action="store_true", help="tiny settings (FSD_NOTEBOOK_SMALL=1)")
    parser.add_argument("--out", type=Path, default=Path("outputs/notebooks"), help="where executed copies go")
    parser.add_argument("--timeout", type=int, default=CELL_TIMEOUT_S, help="seconds per cell")
    args = parser.parse_args(argv)
    paths = notebooks(args.only)
    if not paths:
        print(f"error: no notebook matches {args.only}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    with python_kernel() as kernel, tempfile.TemporaryDirectory() as cwd:
        for path in paths:
            start = time.perf_counter()
            nb = nbformat.read(path, as_version=4)
            try:
                execute(nb, kernel, Path(cwd), args.small, args.timeout)
                status = "ok"
            except Exception as e:  # noqa: BLE001 - report and go on with the next notebook
                status = f"FAILED: {type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
                failed.append(path.name)
            out = args.out / path.name
            nbformat.write(nb, out)
            print(f"{path.name:36s} {time.perf_counter() - start:6.0f} s  {status}  -> {out}", flush=True)
    if failed:
        print(f"{len(failed)} of {len(paths)} notebooks failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
