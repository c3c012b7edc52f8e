"""Real photographs: the CUB-200-2011 subset in ../shared/data (skipped when absent).

Frozen EfficientNet-Lite0 (offline ImageNet weights), features cached once (about 3-5 minutes
of extraction on 2 cores the first time, hence `slow`), the paper's 1024-Swish-512 head.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daalml.config import config_from_dict
from daalml.workflows.train import train

REPO = Path(__file__).resolve().parents[2]


def _subset() -> Path | None:
    candidates = []
    if os.environ.get("DAALML_DATA"):
        candidates.append(Path(os.environ["DAALML_DATA"]) / "cub200-subset100")
    candidates.append(REPO.parent / "shared" / "data" / "cub200-subset100")
    return next((path for path in candidates if path.is_dir()), None)


@pytest.mark.slow
@pytest.mark.skipif(_subset() is None, reason="the CUB subset is not on this machine")
def test_training_lifts_recall_well_above_the_untrained_head(tmp_path: Path) -> None:
    cache = os.environ.get("DAALML_TEST_CACHE", str(tmp_path / "cache"))

    def run(epochs: int) -> dict:
        cfg = config_from_dict(
            {
                "data": {"dataset": "folder", "root": str(_subset()), "train_classes": 58},
                "model": {"backbone": "efficientnet_lite0", "head": "paper"},
                "loss": {"name": "daal"},
                "train": {
                    "epochs": epochs,
                    "cache_features": True,
                    "accelerator": "cpu",
                    "cache_dir": cache,
                },
            }
        )
        return train(cfg, tmp_path / f"epochs{epochs}", progress=False)

    untrained = run(0)
    trained = run(3)
    assert trained["pretrained"]["recall@1"] > 0.8  # ImageNet features know birds
    # a random head on frozen ImageNet features already retrieves well (R@1 ~0.82): training
    # must lift recall above it and the ranking quality (MAP@R) clearly
    assert trained["recall@1"] > untrained["recall@1"] + 0.005, (trained, untrained)
    assert trained["map@r"] > untrained["map@r"] + 0.02, (trained, untrained)
