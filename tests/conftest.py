"""Shared pytest fixtures."""
from __future__ import annotations

import pytest
import torch
from numerics import TEST_THREADS

pytest_plugins = ["tiny_runs"]  # the `run` and `sweep` fixtures of the report / viewer / browser tests


@pytest.fixture(scope="session")
def tiny_sd_path(tmp_path_factory):
    """A tiny random SD model in the diffusers layout (safetensors), built once per session."""
    from fsd2d.priors.random_sd import build_random_sd  # imports diffusers: only when a test needs the model

    return build_random_sd(tmp_path_factory.mktemp("tiny_sd"), "tiny")


@pytest.fixture
def one_thread():
    """TEST_THREADS threads (1 unless FSD_TEST_THREADS says otherwise, tests/numerics.py) for the test."""
    n = torch.get_num_threads()
    torch.set_num_threads(TEST_THREADS)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_sd3_path(tmp_path_factory):
    """A tiny random SD3-layout model (transformer, three text encoders with T5, flow scheduler), built once."""
    from fsd2d.priors.random_backbones import build_random_sd3

    return build_random_sd3(tmp_path_factory.mktemp("tiny_sd3"), "tiny")


@pytest.fixture(scope="session")
def tiny_sdxl_path(tmp_path_factory):
    """A tiny random SDXL-layout model (UNet with text_time conditions, two CLIP encoders), built once."""
    from fsd2d.priors.random_backbones import build_random_sdxl

    return build_random_sdxl(tmp_path_factory.mktemp("tiny_sdxl"), "tiny")


@pytest.fixture(scope="session")
def tiny_flux_path(tmp_path_factory):
    """A tiny random FLUX.1-dev-layout model (guidance embedded, CLIP and T5, dynamic shift), built once."""
    from fsd2d.priors.random_backbones import build_random_flux

    return build_random_flux(tmp_path_factory.mktemp("tiny_flux"), "tiny")


@pytest.fixture(scope="session")
def tiny_flux2_klein_path(tmp_path_factory):
    """A tiny random FLUX.2 klein base folder (Qwen3 text encoder, patchified normalised latents), built once."""
    from fsd2d.priors.random_backbones import build_random_flux2_klein

    return build_random_flux2_klein(tmp_path_factory.mktemp("tiny_flux2_klein"), "tiny")
