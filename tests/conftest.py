"""Shared pytest fixtures."""
from __future__ import annotations

import pytest
import torch

pytest_plugins = ["tiny_runs"]  # the `run` and `sweep` fixtures of the report / viewer / browser tests


@pytest.fixture(scope="session")
def tiny_sd_path(tmp_path_factory):
    """A tiny random SD model in the diffusers layout (safetensors), built once per session."""
    from fsd2d.priors.random_sd import build_random_sd  # imports diffusers: only when a test needs the model

    return build_random_sd(tmp_path_factory.mktemp("tiny_sd"), "tiny")


@pytest.fixture
def one_thread():
    """Tiny tensors run faster single-threaded, and immune to other processes on a 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
