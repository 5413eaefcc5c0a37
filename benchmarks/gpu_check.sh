#!/usr/bin/env bash
# One-shot GPU check: install, gsplat CUDA build, CUDA tests, renderer and 3D-step benchmarks, one table.
#
#     bash benchmarks/fetch_wheels.sh       # where there is network: writes wheels/ (43 MB, ignored by git)
#     bash benchmarks/gpu_check.sh          # on the CUDA machine, from the repo root; no network needed
#
# wheels/ is made by benchmarks/fetch_wheels.sh (the pinned wheels and why each is there are listed in it)
# and must travel with the tree to a machine with no network. Only the wheels of packages that are not
# installed are installed (--no-index --no-deps, into $FSD_GPU_CHECK_SITE, put on PYTHONPATH): torch and
# the other installed packages are never replaced. The project itself is used through PYTHONPATH=$PWD.
#
# Steps (each with its own timeout, all inside a budget of $FSD_GPU_CHECK_BUDGET_S seconds, 470 by
# default: a step that would start with under 20 s left is skipped; a failing step is recorded and the
# check goes on):
#   install        missing wheels from wheels/
#   gpu_info       nvidia-smi, versions
#   gsplat_build   gsplat's CUDA extension built just in time for this card (TORCH_CUDA_ARCH_LIST from
#                  its compute capability, MAX_JOBS=12), timed, then one tiny rasterization on CUDA;
#   sd_build       at the same time: a random Stable Diffusion 2.1-base-sized model (4.7 GB) in a temp folder
#   mvdream_build  at the same time: a random full-size MVDream (SD 2.1-base multi-view UNet, 256 px views)
#   sd3_build      at the same time: a random SD3.5 medium-sized model (build_random_sd3 "sd35m", 5.7 GB: its
#                  2.5 B-value transformer written in float16, what a CUDA run loads, 4.9 GB instead of 9.9 to write
#                  and read twice; ~60 s on one busy CPU core, 45 of them the random initialisation)
#   tests_cuda     pytest -m cuda tests;  tests_gsplat: pytest tests/fsd3d/test_renderer.py -k gsplat
#   bench_render   benchmarks/bench_render.py
#   bench3d_*      benchmarks/bench_3d_step.py --model SD21 --device cuda --resolution 512 --gaussians 20000
#                  --cameras 1 --steps 30 --json, with 1 and 4 seeds, without and with --compile
#   bench3d_mv_*   the same script on the random MVDream at 256 px, 1 camera (= one 4-view set) per seed and
#                  step, 1 and 4 seeds: steps/s and peak GPU memory
#   flow3d_sd35m_* the same script on the random SD3.5 medium at 512 px, 1 camera per seed and step (as the SD
#                  rows), 1 and 4 seeds: steps/s and peak GPU memory, measured, not judged (named flow3d_, not
#                  bench3d_: gpu_table.py judges every bench3d_ row against SD 2.1's targets); its rows are added
#                  below gpu_table.py's table. Adds ~80 s: the build overlaps gsplat's; each benchmark loads 4.7 GB
#                  (~15 s with the imports, as an SD row's ~10 s) and its steps cost ~4x SD 2.1's at 512 px (a 2.2 B
#                  transformer on 1024 + 333 tokens against the 0.87 B UNet): ~30 s for 1 seed, ~50 s for 4, inside
#                  the SD rows' 150 s limit each. Within the default budget the steps before it may leave it none:
#                  FSD_GPU_CHECK_CONFIGS="1 4" FSD_GPU_CHECK_MV_CONFIGS="" leaves it room (memory in benchmarks/
#                  bench_seed_memory.py's projection: 8.7 GiB for 1 seed, 17.6 for 4 at 2 views per seed)
#   bench_outputs  benchmarks/bench_outputs.py (seconds to write one seed's outputs), where it exists
#   gen3d          `fsd gen-3d`, 1 seed, 1 step, with its outputs, when 100 s of the budget are left
# Every step writes $OUT/<step>.log ($OUT defaults to ./gpu_check_out); steps.tsv has status and seconds;
# bench3d_*.json the benchmarks' JSON lines. The last thing printed is the table of
# benchmarks/gpu_table.py (also saved as $OUT/summary.txt). Exit status 1 if a step failed or timed out.
#
# Environment:
#   OUT                       output folder (default ./gpu_check_out)
#   PYTHON                    interpreter (default python3)
#   FSD_GPU_CHECK_DRY=1       plumbing run on a CPU: no CUDA steps, tiny random SD, 16 px, 2 steps
#   FSD_GPU_CHECK_BUDGET_S    seconds for the whole check (default 470)
#   FSD_GPU_CHECK_CONFIGS     3D benchmark configs, seeds with a 'c' for --compile (default "1 4 1c 4c",
#                             dry "1 4")
#   FSD_GPU_CHECK_MODEL       reuse this random SD folder instead of building one (kept afterwards)
#   FSD_GPU_CHECK_MVDREAM     reuse this random MVDream folder instead of building one (kept afterwards)
#   FSD_GPU_CHECK_MV_CONFIGS  MVDream benchmark seed counts (default "1 4"; "" skips MVDream and its build)
#   FSD_GPU_CHECK_SD3         reuse this random SD3.5 medium folder instead of building one (kept afterwards)
#   FSD_GPU_CHECK_FLOW_CONFIGS  SD3.5 medium benchmark seed counts (default "1 4"; "" skips SD3.5 and its build)
#   FSD_GPU_CHECK_SITE        where missing wheels are installed (default $TMPDIR/fsd_gpu_check_site)
#   FSD_GPU_CHECK_BENCH3D     the 3D-step benchmark script (default benchmarks/bench_3d_step.py)
#   FSD_GPU_CHECK_PACK=1      leave only summary.txt and gpu_check_logs.tar.gz in $OUT (for runners that
#                             fetch back a few files only)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu_check_out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
DRY=${FSD_GPU_CHECK_DRY:-0}
BUDGET=${FSD_GPU_CHECK_BUDGET_S:-470}
BENCH3D=${FSD_GPU_CHECK_BENCH3D:-benchmarks/bench_3d_step.py}
SITE=${FSD_GPU_CHECK_SITE:-${TMPDIR:-/tmp}/fsd_gpu_check_site}
MODEL=${FSD_GPU_CHECK_MODEL:-}
MVMODEL=${FSD_GPU_CHECK_MVDREAM:-}
MV_CONFIGS=${FSD_GPU_CHECK_MV_CONFIGS-"1 4"}
SD3MODEL=${FSD_GPU_CHECK_SD3:-}
FLOW_CONFIGS=${FSD_GPU_CHECK_FLOW_CONFIGS-"1 4"}
RESERVE_S=15   # kept for the table at the end
MIN_STEP_S=20  # a step is skipped when less than this is left

START=$(date +%s)
DEADLINE=$((START + BUDGET))
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fsd_gpu_check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

mkdir -p "$SITE"
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export MAX_JOBS=${MAX_JOBS:-12}
# the interpreter's own bin folder first: torch's extension builder runs `ninja` (the pip package puts it there)
if PYBIN=$("$PY" -c 'import os, sys; print(os.path.dirname(sys.executable))' 2>/dev/null); then
    export PATH="$PYBIN:$PATH"
fi

if [[ $DRY == 1 ]]; then
    DEVICE=cpu SD_SIZE=tiny MV_SIZE=tiny RES=16 MV_RES=16 GAUSSIANS=200 STEPS=2 RENDER_ARGS=(--repeats 1 --threads 1)
    OUTPUTS_ARGS=(--repeats 1)
    SD3_SIZE=tiny
    CONFIGS=${FSD_GPU_CHECK_CONFIGS:-"1 4"}
else
    DEVICE=cuda SD_SIZE=sd21 MV_SIZE=full RES=512 MV_RES=256 GAUSSIANS=20000 STEPS=30 RENDER_ARGS=(--repeats 3)
    OUTPUTS_ARGS=(--repeats 3 --threads 4)
    SD3_SIZE=sd35m
    CONFIGS=${FSD_GPU_CHECK_CONFIGS:-"1 4 1c 4c"}
    if ! "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
        echo "gpu_check: $PY sees no CUDA device (for a CPU plumbing run: FSD_GPU_CHECK_DRY=1)" >&2
        exit 2
    fi
fi

# Results of an earlier run in the same folder must not be read as this run's.
rm -f "$OUT"/steps.tsv "$OUT"/wall_s.txt "$OUT"/summary.txt "$OUT"/gpu_check_logs.tar.gz \
    "$OUT"/*.log "$OUT"/*.out "$OUT"/*.json
: >"$OUT/steps.tsv"

log() { echo "[gpu_check $(($(date +%s) - START))s] $*"; }

# run_step NAME LIMIT_S CMD...: run CMD under `timeout`, output in $OUT/NAME.log (with SPLIT=1 stdout goes
# to $OUT/NAME.out and stderr to NAME.log); appends "NAME STATUS SECONDS RC" to steps.tsv. Never fails.
run_step() {
    local name=$1 limit=$2 left rc=0 status=ok t0 secs
    shift 2
    left=$((DEADLINE - $(date +%s) - RESERVE_S))
    if ((left < MIN_STEP_S)); then
        printf '%s\tskipped\t0\t-\n' "$name" >>"$OUT/steps.tsv"
        log "$name: skipped, ${left} s of the budget left"
        return 0
    fi
    if ((limit > left)); then limit=$left; fi
    log "$name (timeout ${limit} s)"
    t0=$(date +%s.%N)
    if [[ ${SPLIT:-0} == 1 ]]; then
        timeout -k 10 "$limit" "$@" >"$OUT/$name.out" 2>"$OUT/$name.log" </dev/null || rc=$?
    else
        timeout -k 10 "$limit" "$@" >"$OUT/$name.log" 2>&1 </dev/null || rc=$?
    fi
    secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    if ((rc == 124 || rc == 137)); then status=TIMEOUT; elif ((rc != 0)); then status=FAIL; fi
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$secs" "$rc" >>"$OUT/steps.tsv"
    log "$name: $status in $secs s$( ((rc == 0)) || echo " (exit $rc; see $OUT/$name.log)")"
}

skip_step() {  # skip_step NAME WHY
    printf '%s\tskipped\t0\t-\n' "$1" >>"$OUT/steps.tsv"
    log "$1: skipped ($2)"
}

# ---------------------------------------------------------------------------------------------- install
# shellcheck disable=SC2016  # Python source, not shell
INSTALL_PY='
import importlib.metadata as md, importlib.util, pathlib, subprocess, sys
wheels, site = pathlib.Path(sys.argv[1]), sys.argv[2]
missing = []
for whl in sorted(wheels.glob("*.whl")):
    name = whl.name.split("-")[0]
    try:
        print(f"installed already: {name} {md.version(name)}")
    except md.PackageNotFoundError:
        missing.append(str(whl))
if missing:
    print("installing:", *missing, sep="\n  ", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--no-compile",
                    "--no-cache-dir", "--disable-pip-version-check", "--target", site, *missing], check=True)
    importlib.invalidate_caches()
need = [n for n in ("diffusers", "gsplat", "jaxtyping") if importlib.util.find_spec(n) is None]
if need:
    sys.exit(f"missing {need} and no wheels for them in {wheels}/: run `bash benchmarks/fetch_wheels.sh` where "
             "there is network, and bring wheels/ along")
'
run_step install 120 "$PY" -c "$INSTALL_PY" "$ROOT/wheels" "$SITE"

# shellcheck disable=SC2016
INFO_SH='
date -u; uname -a; command -v nvidia-smi >/dev/null && nvidia-smi || echo "no nvidia-smi"
git -C "$1" rev-parse HEAD 2>/dev/null && git -C "$1" status --short 2>/dev/null || echo "no git checkout"
"$2" - <<"EOF"
import importlib.metadata as md, platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "cuda", torch.version.cuda,
      "| device", torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
      "| CPU threads", torch.get_num_threads())
for name in ("diffusers", "gsplat", "transformers", "huggingface_hub", "safetensors", "jaxtyping", "numpy"):
    try:
        print(f"  {name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"  {name} missing")
EOF
'
run_step gpu_info 60 bash -c "$INFO_SH" gpu_info "$ROOT" "$PY"

# ------------------------------------------------------------------- gsplat build || random SD model
GSPLAT_PY='
import json, os, sys, time
import torch
from torch.utils.cpp_extension import _get_build_directory
import gsplat  # the CUDA extension is built on first use, below
out = sys.argv[1]
cached = os.path.exists(os.path.join(_get_build_directory("gsplat_cuda", False), "gsplat_cuda.so"))
t0 = time.perf_counter()
from gsplat.cuda._backend import _C
seconds = time.perf_counter() - t0
if _C is None:
    sys.exit("gsplat has no CUDA extension (no CUDA toolkit found?)")
print(f"gsplat CUDA extension ready in {seconds:.1f} s (cached build: {cached})", flush=True)
dev, n = "cuda", 200
g = torch.Generator().manual_seed(0)
means = (torch.randn(n, 3, generator=g) * 0.2).to(dev)
quats = torch.randn(n, 4, generator=g).to(dev)
scales = torch.full((n, 3), 0.05, device=dev)
opacities = torch.full((n,), 0.5, device=dev)
colors = torch.rand(n, 3, generator=g).to(dev)
viewmats = torch.eye(4, device=dev)[None].clone()
viewmats[0, 2, 3] = 2.0  # camera 2 units in front of the origin, looking along +z
Ks = torch.tensor([[[64.0, 0.0, 32.0], [0.0, 64.0, 32.0], [0.0, 0.0, 1.0]]], device=dev)
rgb, alpha, _ = gsplat.rasterization(means, quats, scales, opacities, colors, viewmats, Ks, 64, 64)
torch.cuda.synchronize()
assert rgb.shape == (1, 64, 64, 3) and bool(torch.isfinite(rgb).all()) and float(alpha.max()) > 0.1, rgb.shape
print("tiny gsplat.rasterization on CUDA: ok, max alpha", round(float(alpha.max()), 3))
arch = os.environ.get("TORCH_CUDA_ARCH_LIST", "")
with open(os.path.join(out, "gsplat_build.json"), "w") as f:
    json.dump({"seconds": seconds, "cached": cached, "arch": arch, "ok": True}, f)
'
BUILD_SD_PY='
import sys, time
from fsd2d.priors.random_sd import build_random_sd
t0 = time.perf_counter()
build_random_sd(sys.argv[1], sys.argv[2])
print(f"built a random {sys.argv[2]} model in {sys.argv[1]} in {time.perf_counter() - t0:.1f} s")
'
BUILD_MV_PY='
import sys, time
from fsd2d.priors.random_sd import build_random_mvdream
t0 = time.perf_counter()
build_random_mvdream(sys.argv[1], sys.argv[2])
print(f"built a random {sys.argv[2]} MVDream model in {sys.argv[1]} in {time.perf_counter() - t0:.1f} s")
'
BUILD_SD3_PY='
import sys, time
import torch
import fsd2d.priors.random_backbones as rb
save_sd3 = rb.save_sd3
def save_half(folder, transformer, *rest):  # the transformer in float16: what a CUDA run loads, half the bytes
    return save_sd3(folder, transformer.to(torch.float16), *rest)
rb.save_sd3 = save_half
t0 = time.perf_counter()
rb.build_random_sd3(sys.argv[1], sys.argv[2])
print(f"built a random {sys.argv[2]} SD3 model in {sys.argv[1]} in {time.perf_counter() - t0:.1f} s")
'
gsplat_pid=
if [[ $DRY == 1 ]]; then
    skip_step gsplat_build "dry run"
else
    if [[ -z ${TORCH_CUDA_ARCH_LIST:-} ]]; then
        TORCH_CUDA_ARCH_LIST=$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')
        export TORCH_CUDA_ARCH_LIST
    fi
    log "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS"
    run_step gsplat_build 300 "$PY" -c "$GSPLAT_PY" "$OUT" &
    gsplat_pid=$!
fi
mv_pid=
if [[ -z $MV_CONFIGS ]]; then
    skip_step mvdream_build "no MVDream configs"
elif [[ -n $MVMODEL && -f $MVMODEL/model_index.json ]]; then
    skip_step mvdream_build "reusing $MVMODEL"
else
    MVMODEL=$WORK/mvdream_$MV_SIZE
    run_step mvdream_build 240 env OMP_NUM_THREADS=4 "$PY" -c "$BUILD_MV_PY" "$MVMODEL" "$MV_SIZE" &
    mv_pid=$!
fi
sd3_pid=
if [[ -z $FLOW_CONFIGS ]]; then
    skip_step sd3_build "no SD3.5 configs"
elif [[ -n $SD3MODEL && -f $SD3MODEL/model_index.json ]]; then
    skip_step sd3_build "reusing $SD3MODEL"
else
    SD3MODEL=$WORK/sd3_$SD3_SIZE
    run_step sd3_build 240 env OMP_NUM_THREADS=4 "$PY" -c "$BUILD_SD3_PY" "$SD3MODEL" "$SD3_SIZE" &
    sd3_pid=$!
fi
if [[ -n $MODEL && -f $MODEL/model_index.json ]]; then
    skip_step sd_build "reusing $MODEL"
else
    MODEL=$WORK/sd_$SD_SIZE
    # few CPU threads: the gsplat build runs beside it with MAX_JOBS compilers
    run_step sd_build 240 env OMP_NUM_THREADS=4 "$PY" -c "$BUILD_SD_PY" "$MODEL" "$SD_SIZE"
fi
if [[ -n $gsplat_pid ]]; then wait "$gsplat_pid" || true; fi
if [[ -n $mv_pid ]]; then wait "$mv_pid" || true; fi
if [[ -n $sd3_pid ]]; then wait "$sd3_pid" || true; fi

# ------------------------------------------------------------------------------------------------ tests
IGNORE=()
if ! "$PY" -c 'import nbformat' 2>/dev/null; then
    IGNORE=(--ignore=tests/e2e/test_notebooks.py)  # imports nbformat at module level; it has no CUDA tests
fi
run_step tests_cuda 240 "$PY" -m pytest -q -rs -p no:cacheprovider -m cuda ${IGNORE[@]+"${IGNORE[@]}"} tests
run_step tests_gsplat 180 "$PY" -m pytest -q -rs -p no:cacheprovider tests/fsd3d/test_renderer.py -k gsplat

# ----------------------------------------------------------------------------------------- benchmarks
run_step bench_render 180 "$PY" benchmarks/bench_render.py "${RENDER_ARGS[@]}"

for config in $CONFIGS; do
    seeds=${config%c}
    args=(--model "$MODEL" --device "$DEVICE" --resolution "$RES" --gaussians "$GAUSSIANS" --cameras 1
          --seeds "$seeds" --steps "$STEPS" --json)
    name=bench3d_s$seeds limit=150
    if [[ $config == *c ]]; then args+=(--compile); name+=_compile; limit=270; fi
    SPLIT=1 run_step "$name" "$limit" "$PY" "$BENCH3D" "${args[@]}"
    # its last non-blank stdout line is the JSON object
    if [[ -s $OUT/$name.out ]]; then awk 'NF { last = $0 } END { print last }' "$OUT/$name.out" >"$OUT/$name.json"; fi
done

for seeds in $MV_CONFIGS; do  # MVDream: 1 camera = one 4-view set per seed and step
    name=bench3d_mv_s$seeds
    SPLIT=1 run_step "$name" 150 "$PY" "$BENCH3D" --model "$MVMODEL" --device "$DEVICE" --resolution "$MV_RES" \
        --gaussians "$GAUSSIANS" --cameras 1 --seeds "$seeds" --steps "$STEPS" --json
    if [[ -s $OUT/$name.out ]]; then awk 'NF { last = $0 } END { print last }' "$OUT/$name.out" >"$OUT/$name.json"; fi
done

for seeds in $FLOW_CONFIGS; do  # SD3.5 medium: 1 camera per seed and step, as the SD rows
    name=flow3d_sd35m_s$seeds
    SPLIT=1 run_step "$name" 150 "$PY" "$BENCH3D" --model "$SD3MODEL" --device "$DEVICE" --resolution "$RES" \
        --gaussians "$GAUSSIANS" --cameras 1 --seeds "$seeds" --steps "$STEPS" --json
    if [[ -s $OUT/$name.out ]]; then awk 'NF { last = $0 } END { print last }' "$OUT/$name.out" >"$OUT/$name.json"; fi
done

if [[ -f benchmarks/bench_outputs.py ]]; then
    run_step bench_outputs 120 "$PY" benchmarks/bench_outputs.py --resolution "$RES" --device "$DEVICE" \
        "${OUTPUTS_ARGS[@]}"
fi
if ((DEADLINE - $(date +%s) - RESERVE_S >= 100)); then
    run_step gen3d 150 "$PY" cli.py gen-3d --model "$MODEL" --device "$DEVICE" --resolution "$RES" --seeds 0 \
        --steps 1 --num-gaussians "$GAUSSIANS" --cameras-per-step 1 --checkpoint-every 1000 \
        --out "$WORK/gen3d" --no-progress
else
    skip_step gen3d "under 100 s of the budget left"
fi

# ---------------------------------------------------------------------------------------------- table
# The SD3.5 rows in gpu_table.py's columns, below its table: measured, not judged (target "-")
FLOW_TABLE_PY='
import math, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from gpu_table import outcome, read_bench, read_steps
out, model = Path(sys.argv[2]), "sd35m"
steps = read_steps(out)
for seeds in sys.argv[3:]:
    name = f"flow3d_{model}_s{seeds}"
    data = read_bench(out / f"{name}.json")
    compiled = "no" if data is None or not data["compile"] else "yes"
    if data is None:
        print(f"{model:>7} {seeds:>5} {compiled:>7}  no result: {outcome(steps.get(name), name)}")
        continue
    n = int(seeds)
    ms, seq = float(data["batched_ms_per_step"]), float(data["sequential_ms_per_step"])
    sps = 1000.0 / ms if ms > 0 else math.nan
    split = "/".join(f"{float(data[k]):.1f}" for k in ("render_ms", "prior_ms", "rest_ms"))
    peak = math.nan if data.get("peak_gib") is None else float(data["peak_gib"])
    ratio = seq / ms if ms > 0 else math.nan
    print(f"{model:>7} {n:>5} {compiled:>7} {ms:>10.1f} {sps:>8.1f} {n * sps:>12.1f} {seq:>8.1f} {ratio:>7.2f} "
          f"{split:>20} {peak:>8.2f}  -")
'
echo $(($(date +%s) - START)) >"$OUT/wall_s.txt"
"$PY" benchmarks/gpu_table.py "$OUT" | tee "$OUT/summary.txt" || echo "gpu_table.py failed; see $OUT/steps.tsv"
if [[ -n $FLOW_CONFIGS ]]; then
    # shellcheck disable=SC2086  # one argument per seed count
    "$PY" -c "$FLOW_TABLE_PY" "$ROOT/benchmarks" "$OUT" $FLOW_CONFIGS | tee -a "$OUT/summary.txt" \
        || echo "the SD3.5 rows failed; see $OUT/steps.tsv"
fi
failed=0
if cut -f2 "$OUT/steps.tsv" | grep -qE '^(FAIL|TIMEOUT)$'; then failed=1; fi
if [[ ${FSD_GPU_CHECK_PACK:-0} == 1 ]]; then
    (cd "$OUT" && find . -maxdepth 1 -type f ! -name summary.txt ! -name gpu_check_logs.tar.gz -printf '%P\n' \
        | tar -czf "$WORK/logs.tar.gz" -T - && find . -maxdepth 1 -type f ! -name summary.txt -delete \
        && mv "$WORK/logs.tar.gz" gpu_check_logs.tar.gz)
fi
exit "$failed"
