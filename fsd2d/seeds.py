"""Seeds: the range a run's seeds take, and the seeds of the other random streams a seed owns (its scene, cameras,
noise map, particles, critic), each independent of every other seed's streams."""
from __future__ import annotations

import hashlib

__all__ = ["SEED_LIMIT", "seed_for", "stream_seed"]

SEED_LIMIT = 2**31  # seeds are non-negative and below this (what every RNG takes)


def seed_for(seed: int, purpose: str) -> int:
    """An independent 63-bit generator seed per (seed, purpose): scene init, cameras, noise map, fresh noise.

    Plain seed + k offsets would make seed s's camera stream seed s+1's scene stream."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{purpose}".encode()).digest()[:8], "little") >> 1


def stream_seed(seed: int, purpose: str) -> int:
    """A generator seed for a seed's other stream (a particle's, a critic's) in [2^31, 2^32): torch's CPU generator
    keeps only a seed's low 32 bits, and a run's seeds are below 2^31, so no seed's own stream is met."""
    return (seed_for(seed, purpose) & (SEED_LIMIT - 1)) | SEED_LIMIT
