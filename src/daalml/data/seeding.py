"""Per-sample seeds: every augmentation is a fixed function of the run's seed and its place."""

from __future__ import annotations

import hashlib
import random
import struct

import numpy as np
import torch


def mix_seed(*parts: int) -> int:
    """A 32-bit seed that is a fixed function of ``parts`` (same in every process and run)."""
    packed = struct.pack(f"<{len(parts)}q", *parts)
    return int.from_bytes(hashlib.blake2b(packed, digest_size=4).digest(), "little")


def seed_host(seed: int) -> None:
    """Seed the CPU generators of torch, numpy and ``random`` (cheap: safe per sample)."""
    torch.default_generator.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
