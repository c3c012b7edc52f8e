"""The benchmarks' data: clustered unit vectors, made with numpy alone (so that
``bench_versions.py`` can time checkouts whose other benchmark helpers differ)."""

from __future__ import annotations

import numpy as np


def clustered(n: int, dim: int, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around n // per_class random centres, noisy enough for recall@1 < 1."""
    rng = np.random.default_rng(seed)
    n_classes = max(1, n // per_class)
    labels = rng.integers(0, n_classes, size=n)
    centres = rng.standard_normal((n_classes, dim)).astype(np.float32)
    x = centres[labels] + rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, labels
