"""Shared pytest fixtures."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_sd_path(tmp_path_factory):
    """A tiny random SD model in the diffusers layout (safetensors), built once per session."""
    from fsd2d.priors.random_sd import build_random_sd  # imports diffusers: only when a test needs the model

    return build_random_sd(tmp_path_factory.mktemp("tiny_sd"), "tiny")
