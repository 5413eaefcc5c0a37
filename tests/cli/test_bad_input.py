"""Bad input across every command: one `error:` line on stderr, exit code 2, nothing written, an existing
--out left exactly as it was. One test (or parametrised family) per kind of bad input."""
import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app

runner = CliRunner()
TINY_2D = ["--steps", "3", "--resolution", "16", "--seeds", "0", "--no-progress"]
TINY_3D = ["--steps", "3", "--resolution", "16", "--seeds", "0", "--num-gaussians", "50", "--no-progress"]
TINY = {"compare-2d": TINY_2D, "shuffle-noise": TINY_2D, "consistency": [*TINY_2D, "--window", "2"],
        "beta-sweep": TINY_2D, "gen-3d": TINY_3D}
COMMANDS_2D = ("compare-2d", "shuffle-noise", "consistency", "beta-sweep")

pytestmark = pytest.mark.usefixtures("one_thread")


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under root (hidden ones too) -> its bytes (None for folders)."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def existing_out(tmp_path: Path, command: str = "compare-2d") -> Path:
    """An earlier output of `command` (its run.json and metrics.json): the one kind of existing folder a command may
    replace (fsd2d.folders), so bad input must be refused before it, and leave it as it was."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text(f'{{"command": "{command}"}}\n')
    (out / "metrics.json").write_text("{}\n")
    return out


def assert_refused(tmp_path: Path, command: str, args: list[str], needle: str, out: Path | None = None) -> None:
    """Run `fsd command TINY args --out out`: exit 2, one `error:` line holding needle, tmp_path unchanged."""
    out = existing_out(tmp_path, command) if out is None else out
    before = snapshot(tmp_path)
    res = runner.invoke(app, [command, *TINY[command], *map(str, args), "--out", str(out)])
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2, (command, args, res.output)
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], (command, args, res.stderr)
    assert "Traceback" not in res.output
    assert snapshot(tmp_path) == before, (command, args)


@pytest.mark.parametrize("command,args,needle", [
    ("compare-2d", ["--steps", "100000000000"], "steps must be <= 100000"),
    ("consistency", ["--steps", 2**64], "steps must be <= 100000"),
    ("gen-3d", ["--steps", 2**64], "steps must be <= 100000"),
    ("compare-2d", ["--seeds", 2**64], "below 2147483648"),
    ("beta-sweep", ["--seeds", "0-1000000000000"], "at most 4096"),
    ("gen-3d", ["--seeds", "0-5000"], "at most 4096"),
    ("shuffle-noise", ["--perm-seed", 2**64], "perm-seed must be in [0, 2147483647]"),
    ("shuffle-noise", ["--perm-seed", -1], "perm-seed must be in [0, 2147483647]"),
    ("gen-3d", ["--num-gaussians", 10**10], "num-gaussians must be in [1, 10000000]"),
    ("gen-3d", ["--cameras-per-step", 10**9], "cameras-per-step must be in [1, 256]"),
    ("gen-3d", ["--densify-cap", 2**64], "densify-cap must be in [1, 40000000]"),
    ("gen-3d", ["--theta", "1e-3"], "too large"),  # a world map of 10^14 values: refused before allocating
    ("compare-2d", ["--resolution", 2**64], "8..128"),
    ("compare-2d", ["--cfg", "1e308"], "CFG scale must be <= 1000"),  # finite, yet NaN images
    ("shuffle-noise", ["--lr", "1e308"], "learning rate must be in (0, 100]"),
    ("gen-3d", ["--radius", "1e300,1e301"], "camera radius must be <= 1000"),
])
def test_numbers_beyond_any_range_are_refused_before_allocating(tmp_path, command, args, needle):
    assert_refused(tmp_path, command, args, needle)


@pytest.mark.parametrize("command,args,needle", [
    ("compare-2d", ["--cfg", "inf"], "CFG scale must be a finite number, got inf"),
    ("compare-2d", ["--lr", "inf"], "learning rate must be a finite number, got inf"),
    ("shuffle-noise", ["--lr", "nan"], "learning rate must be a finite number, got nan"),
    ("consistency", ["--cfg", "nan"], "CFG scale must be a finite number"),
    ("beta-sweep", ["--betas", "0,inf"], "--betas must be a finite number"),
    ("gen-3d", ["--cfg", "inf"], "CFG scale must be a finite number"),
    ("gen-3d", ["--theta", "inf"], "theta must be a finite number"),
    ("gen-3d", ["--alpha0", "nan"], "alpha0 must be a finite number"),
    ("gen-3d", ["--radius", "1,inf"], "--radius must be a finite number"),
    ("gen-3d", ["--densify-grad", "inf"], "densify-grad must be a finite number"),
    ("compare-2d", ["--resolution", "0"], "resolution must be a positive number of pixels, got 0"),
    ("shuffle-noise", ["--resolution", "-16"], "resolution must be a positive number of pixels"),
    ("gen-3d", ["--resolution", "0"], "resolution must be a positive number of pixels, got 0"),
])
def test_non_finite_and_non_positive_values_are_refused(tmp_path, command, args, needle):
    assert_refused(tmp_path, command, args, needle)


@pytest.mark.parametrize("args,needle", [
    (["--defaults", "dreamfusion"], "unknown --defaults value 'dreamfusion'"),
    (["--weighting", "snr"], "unknown --weighting value 'snr'"),
    (["--background", "green"], "unknown --background value 'green'"),
    (["--init-radius", "nan"], "init-radius must be a finite number"),
    (["--init-opacity", "1.5"], "init opacity in (0, 1)"),
])
def test_bad_profile_settings_are_refused(tmp_path, args, needle):
    """The per-backbone settings of gen-3d (fsd3d/backbones.py)."""
    assert_refused(tmp_path, "gen-3d", args, needle)


def test_empty_init_ply_is_refused(tmp_path):
    empty = tmp_path / "empty.ply"
    empty.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 0\n"
                      + b"".join(f"property float {n}\n".encode() for n in "x y z".split()) + b"end_header\n")
    assert_refused(tmp_path, "gen-3d", ["--init", empty], "0 vertices")


@pytest.mark.parametrize("command", [*COMMANDS_2D, "gen-3d"])
def test_out_that_is_a_file_or_below_a_file_is_refused_before_computing(tmp_path, command):
    results = tmp_path / "results.txt"
    results.write_text("not a folder\n")
    assert_refused(tmp_path, command, [], "exists and is not a folder", out=results)
    assert_refused(tmp_path, command, [], "results.txt is not a folder", out=results / "deeper" / "run")


def test_nothing_is_half_written(tmp_path):
    """gen-3d checks its noise function (--theta) before run.json; a rerun clears a killed run's temporaries
    (dead PID, this host), and leaves a live one's and foreign files alone."""
    assert_refused(tmp_path, "gen-3d", ["--theta", "1e-4"], "theta_deg")
    shutil.rmtree(tmp_path / "out")  # assert_refused's earlier gen-3d output
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    stale = tmp_path / f".out.tmp-{host}-{dead.pid}-x1y2"
    (stale / "images").mkdir(parents=True)
    live = tmp_path / f".out.tmp-{host}-1-z3"  # PID 1 is alive
    live.mkdir()
    foreign = tmp_path / ".out.tmp-mine"
    foreign.write_text("a user's file\n")
    res = runner.invoke(app, ["compare-2d", *TINY_2D, "--methods", "fsd", "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".out.tmp-mine", live.name, "out"])


def test_third_party_warnings_are_silenced(tiny_sd_path, tmp_path):
    """diffusers' "accelerate was not found" and the weight-loading bars would come before our one line."""
    out = existing_out(tmp_path)
    before = snapshot(tmp_path)
    for args in (["--resolution", "10"], ["--resolution", "4097"]):
        res = subprocess.run([sys.executable, "-m", "cli", "compare-2d", "--model", str(tiny_sd_path), *TINY_2D[:2],
                              *args, "--seeds", "0", "--no-progress", "--out", str(out)],
                             capture_output=True, text=True, cwd=Path(__file__).parents[2])
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.stderr
        assert "resolution" in lines[0] and res.stdout == ""
    assert snapshot(tmp_path) == before


def test_results_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        out = tmp_path / "out"
        res = runner.invoke(app, ["compare-2d", *TINY_2D, "--methods", "fsd", "--out", str(out)])
        assert res.exit_code == 0, res.output
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [out, *out.rglob("*")]}
    finally:
        os.umask(old)
    assert modes.pop("out") == modes.pop("images") == 0o750
    assert set(modes.values()) == {0o640}, modes
    res = runner.invoke(app, ["compare-2d", *TINY_2D, "--steps", "0", "--out", str(out)])  # and bad input
    assert res.exit_code == 2 and stat.S_IMODE(out.stat().st_mode) == 0o750
