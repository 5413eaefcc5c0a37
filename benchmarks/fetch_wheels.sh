#!/usr/bin/env bash
# Download the wheels that benchmarks/gpu_check.sh installs on a GPU machine with no network.
#
#     bash benchmarks/fetch_wheels.sh [EXTRA_PACKAGE ...]      # from the repo root; writes wheels/
#
# The target is a Linux x86-64 CUDA machine with Python 3.12 that already has torch, transformers,
# scikit-image, typer, rich, ninja (and with them huggingface_hub, safetensors, regex, requests,
# Pillow, numpy). What it may lack, checked against each wheel's Requires-Dist:
#   diffusers 0.42.1  needs huggingface-hub>=1.32 (hub 1.33 is on the lent H100/H200 image) and
#                     importlib_metadata, which diffusers imports only on Python < 3.8: not carried;
#   gsplat 1.5.3      pure Python + CUDA sources, built just in time by gpu_check.sh; needs jaxtyping,
#                     which needs wadler-lindig;
#   peft 0.21.2       VSD / ESD's LoRA critic (fsd2d.vsd); needs accelerate, which needs psutil;
#   imageio, imageio-ffmpeg   the turntable MP4; imageio-ffmpeg 0.7.0 is the newest manylinux2014 wheel
#                     (29 MB with its ffmpeg binary; 0.8.1 is manylinux_2_28 and 68 MB).
# Extra arguments are downloaded too. Everything is installed with --no-deps and only where missing, so torch is never
# upgraded or replaced.
set -euo pipefail

dest=${FSD_WHEELS_DIR:-wheels}
rm -rf "$dest"
mkdir -p "$dest"
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform any \
    --retries 1 --timeout 30 -d "$dest" \
    diffusers==0.42.1 gsplat==1.5.3 imageio==2.38.1 imageio-ffmpeg==0.7.0 jaxtyping==0.3.11 \
    wadler-lindig==0.1.8 peft==0.21.2 accelerate==1.16.0 psutil==7.2.2 "$@"
du -sh "$dest"
