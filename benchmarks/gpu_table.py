"""The closing table of benchmarks/gpu_check.sh, read from the files it saved in its output folder.

    python benchmarks/gpu_table.py OUT_DIR

Reads (each optional; what is missing shows as "no result" with the step's status):
  steps.tsv                 one line per step: name, status (ok, FAIL, TIMEOUT, skipped), seconds, exit code
  bench3d_<config>.json     the last stdout line of `bench_3d_step.py --json`: batched_ms_per_step,
                            sequential_ms_per_step, render_ms, prior_ms, rest_ms, peak_gib, seeds, compile
                            (config s<seeds>[_compile] for Stable Diffusion, mv_s<seeds> for MVDream: 1 camera
                            = one 4-view set per seed and step, 256 px; no target)
  gsplat_build.json         {"seconds", "cached", "arch", "ok"} from the timed gsplat CUDA build
  tests_<name>.log          pytest output; its last summary line is shown
  bench_outputs.log         its "... seconds: ..." lines are shown
  gen3d.log                 `fsd gen-3d` output; its last "wrote ... in X s" line is shown
  wall_s.txt                seconds the whole check took
Targets (Stable Diffusion rows): 1 seed >= 25 steps/s; 4 seeds >= 12 steps/s with peak GPU memory <= 8 GiB (a step
advances every seed). MVDream rows are measured, not judged.
"""
from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

TARGET_STEPS_PER_S = {1: 25.0, 4: 12.0}  # seeds -> steps/s
TARGET_PEAK_GIB = {4: 8.0}  # seeds -> GiB
BENCH_KEYS = ("batched_ms_per_step", "sequential_ms_per_step", "render_ms", "prior_ms", "rest_ms", "peak_gib",
              "seeds", "compile")
PYTEST_SUMMARY = re.compile(r"\b\d+ (passed|failed|skipped|deselected|errors?|xfailed|xpassed)\b|no tests ran")


@dataclass(frozen=True)
class Step:
    name: str
    status: str  # ok, FAIL, TIMEOUT, skipped
    seconds: float
    rc: str


def read_steps(out: Path) -> dict[str, Step]:
    """steps.tsv -> {name: Step}, in run order (a step run twice keeps its last line)."""
    steps: dict[str, Step] = {}
    path = out / "steps.tsv"
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) == 4:
                try:
                    steps[parts[0]] = Step(parts[0], parts[1], float(parts[2]), parts[3])
                except ValueError:
                    continue
    return steps


def read_bench(path: Path) -> dict | None:
    """The benchmark's JSON object, or None when the file is missing, empty or not a JSON object with all keys."""
    try:
        data = json.loads(path.read_text().strip().splitlines()[-1])
    except (OSError, IndexError, ValueError):
        return None
    if not isinstance(data, dict) or any(k not in data for k in BENCH_KEYS):
        return None
    return data


def config_of(name: str) -> tuple[int | None, bool]:
    """'bench3d_s4_compile' -> (4, True); 'bench3d_mv_s4' (MVDream) -> (4, False)."""
    m = re.fullmatch(r"bench3d_(?:mv_)?s(\d+)(_compile)?", name)
    return (int(m.group(1)), bool(m.group(2))) if m else (None, "compile" in name)


def model_of(name: str) -> str:
    """'sd' or 'mvdream' (bench3d_mv_*)."""
    return "mvdream" if name.startswith("bench3d_mv_") else "sd"


def verdict(seeds: int, steps_per_s: float, peak_gib: float) -> str:
    """PASS/FAIL of the target for this seed count, with what failed; '-' where no target is set."""
    if seeds not in TARGET_STEPS_PER_S:
        return "-"
    misses = []
    if not steps_per_s >= TARGET_STEPS_PER_S[seeds]:
        misses.append(f"<{TARGET_STEPS_PER_S[seeds]:g} steps/s")
    if seeds in TARGET_PEAK_GIB and not math.isnan(peak_gib) and not peak_gib <= TARGET_PEAK_GIB[seeds]:
        misses.append(f">{TARGET_PEAK_GIB[seeds]:g} GiB")
    return "PASS" if not misses else "FAIL " + ", ".join(misses)


def bench_rows(out: Path, steps: dict[str, Step]) -> list[str]:
    names = [n for n in steps if n.startswith("bench3d_")]
    names += sorted(p.stem for p in out.glob("bench3d_*.json") if p.stem not in names)
    head = (f"{'model':>7} {'seeds':>5} {'compile':>7} {'batched ms':>10} {'steps/s':>8} {'seed-steps/s':>12} "
            f"{'seq ms':>8} "
            f"{'seq/bat':>7} {'render/prior/rest ms':>20} {'peak GiB':>8}  target")
    rows = [head]
    for name in names:
        data = read_bench(out / f"{name}.json")
        seeds, compiled = config_of(name)
        if data is None:
            step = steps.get(name)
            why = outcome(step, name)
            if (out / f"{name}.json").exists() and (step is None or step.status == "ok"):
                why = f"no JSON object with all keys on its last stdout line (see {name}.out)"
            rows.append(f"{model_of(name):>7} {seeds if seeds is not None else '?':>5} "
                        f"{'yes' if compiled else 'no':>7}  "
                        f"no result: {why}")
            continue
        seeds = len(data["seeds"]) if isinstance(data["seeds"], list) else int(data["seeds"])
        ms, seq = float(data["batched_ms_per_step"]), float(data["sequential_ms_per_step"])
        sps = 1000.0 / ms if ms > 0 else math.nan
        split = f"{float(data['render_ms']):.1f}/{float(data['prior_ms']):.1f}/{float(data['rest_ms']):.1f}"
        peak = math.nan if data.get("peak_gib") is None else float(data["peak_gib"])  # None off CUDA
        judged = verdict(seeds, sps, peak) if model_of(name) == "sd" else "-"
        rows.append(f"{model_of(name):>7} {seeds:>5} {'yes' if data['compile'] else 'no':>7} {ms:>10.1f} {sps:>8.1f} {seeds * sps:>12.1f} "
                    f"{seq:>8.1f} {seq / ms if ms > 0 else math.nan:>7.2f} {split:>20} {peak:>8.2f}  "
                    f"{judged}")
    if not names:
        rows.append("(no 3D benchmark ran)")
    return rows


def outcome(step: Step | None, name: str) -> str:
    """'skipped', 'not run' or 'FAIL after 12 s (see NAME.log)'."""
    if step is None:
        return "not run"
    if step.status == "skipped":
        return "skipped"
    return f"{step.status} after {step.seconds:.0f} s (see {name}.log)"


def last_match(path: Path, pattern: re.Pattern) -> str | None:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if pattern.search(line):
            return line.strip().strip("=").strip()
    return None


def gsplat_line(out: Path, steps: dict[str, Step]) -> str:
    try:
        info = json.loads((out / "gsplat_build.json").read_text())
    except (OSError, ValueError):
        info = None
    step = steps.get("gsplat_build")
    if isinstance(info, dict) and info.get("ok"):
        cached = ", cached build loaded" if info.get("cached") else ""
        return f"gsplat CUDA build: {float(info['seconds']):.1f} s (arch {info.get('arch', '?')}{cached})"
    return f"gsplat CUDA build: {outcome(step, 'gsplat_build')}"


def table(out: Path) -> str:
    steps = read_steps(out)
    lines = ["", "== gpu_check summary " + "=" * 58, gsplat_line(out, steps)]
    for log in sorted(out.glob("tests_*.log")):
        name = log.stem[len("tests_"):]
        step = steps.get(log.stem)
        summary = last_match(log, PYTEST_SUMMARY) or "no pytest summary line"
        lines.append(f"tests {name}: {summary}" + (f" [{step.status}]" if step and step.status != "ok" else ""))
    if "bench_outputs" in steps:
        try:
            timed = [l.strip() for l in (out / "bench_outputs.log").read_text(errors="replace").splitlines()
                     if " seconds: " in l]
        except OSError:
            timed = []
        step = steps["bench_outputs"]
        lines += [f"outputs: {t}" for t in timed] or [f"outputs: {outcome(step, 'bench_outputs')}"]
    if "gen3d" in steps:
        wrote = last_match(out / "gen3d.log", re.compile(r"^wrote .* in [\d.]+ s"))
        step = steps["gen3d"]
        if step.status == "ok":
            lines.append(f"gen-3d, 1 seed, 1 step: {step.seconds:.0f} s wall"
                         + (f" (run and outputs{wrote[wrote.rfind(' in '):]})" if wrote else ""))
        else:
            lines.append(f"gen-3d, 1 seed, 1 step: {outcome(step, 'gen3d')}")
    bad = [f"{s.name} {s.status}" for s in steps.values() if s.status != "ok"]
    try:
        wall = f"; {float((out / 'wall_s.txt').read_text()):.0f} s in all"
    except (OSError, ValueError):
        wall = ""
    lines.append("steps not ok: " + (", ".join(bad) if bad else "none") + wall)
    lines += bench_rows(out, steps)
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print(__doc__.splitlines()[2].strip(), file=sys.stderr)
        return 2
    print(table(Path(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
