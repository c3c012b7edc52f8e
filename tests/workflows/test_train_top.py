"""Training the last backbone stages on cached trunk activations (model.train_blocks), end to end.

A small_cnn on generated noise images: the checkpoint holds the trained top stages, and
evaluate/embed on images give the embeddings the cached path gave.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from daalml.config import config_from_dict
from daalml.engine.checkpoint import load_checkpoint, load_module
from daalml.engine.data import prepare_data
from daalml.engine.inference import embed
from daalml.engine.loaders import SeededBatches, train_loader
from daalml.errors import DaalmlError
from daalml.models.build import build_model
from daalml.models.stages import split_backbone
from daalml.retrieval import embed_images
from daalml.workflows.evaluate import evaluate
from daalml.workflows.train import train
from tests.data.builders import make_noise_folder
from tests.runs import tiny_run_config


def _cfg(tmp: Path, **sections: dict):
    root = tmp / "ds"
    if not root.is_dir():
        make_noise_folder(root, n_classes=10, per_class=4, size=40)
    base = {
        "model": {"train_blocks": 1, "freeze_bn": True},
        "train": {"cache_features": True, "epochs": 2, "val_classes": 2, "scheduler": "none"},
        "data": {"cached_views": 2, "train_classes": 6},
    }
    for section, values in sections.items():
        base[section] = {**base.get(section, {}), **values}
    return config_from_dict(tiny_run_config(root, tmp / "cache", **base))


def _data(cfg):
    torch.manual_seed(cfg.train.seed)  # small_cnn's random trunk, as train() seeds it
    return prepare_data(cfg, build_model(cfg).backbone)


@pytest.mark.parametrize(("dtype", "tolerance"), [("float16", 1e-2), ("float32", 1e-5)])
def test_checkpoint_on_images_gives_the_cached_embeddings(
    tmp_path: Path, dtype: str, tolerance: float
) -> None:
    cfg = _cfg(tmp_path, train={"cache_dtype": dtype})
    metrics = train(cfg, tmp_path / "run", progress=False)
    best = tmp_path / "run" / "checkpoints" / "best.ckpt"
    saved = load_checkpoint(best)["state_dict"]
    top = [k for k in saved if k.startswith("model.backbone.")]
    assert top and all(
        k.startswith("model.backbone.body.5.") or k.startswith("model.backbone.body.6.")
        for k in top
    )  # small_cnn's last stage only

    module, image_cfg = load_module(best)  # the whole backbone, on images
    assert not image_cfg.train.cache_features
    full = module.model.backbone
    trained = dict(full.named_parameters())["body.6.0.weight"]
    assert torch.equal(trained, saved["model.backbone.body.6.0.weight"])

    built = set((tmp_path / "cache" / "activations").glob("*.npy"))
    cached = prepare_data(cfg, full)  # the cache built by the run, read back
    assert cached.activations
    assert set((tmp_path / "cache" / "activations").glob("*.npy")) == built  # same trunk
    top_part = split_backbone(full, 1).top
    module.eval()
    device = torch.device("cpu")
    on_cache, _ = embed(
        lambda x: module.model.embed_features(top_part(x)),
        cached.test,
        batch_size=8,
        device=device,
    )
    paths = [r.path for r in prepare_data(image_cfg, full).test.records]
    on_images = embed_images(module, paths, batch_size=8)
    assert on_images.shape == on_cache.shape
    assert (on_images - on_cache).abs().max().item() < tolerance
    assert (on_images - on_cache).abs().max().item() > 0 or dtype == "float32"

    again = evaluate(best)  # whole backbone on images
    assert set(metrics) - {"pretrained", "selected_epoch", "validation"} == set(again)
    if dtype == "float32":
        assert again["recall@1"] == pytest.approx(metrics["recall@1"], abs=1e-6)


def test_view_drawn_per_epoch_and_slot_is_the_same_after_a_resume(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    model = build_model(cfg)
    data = prepare_data(cfg, model.backbone)

    def draws(epoch: int, skip: int = 0) -> list[list[tuple[int, int]]]:
        loader = train_loader(data, cfg, epoch=epoch)
        # what Lightning hands back on a resume `skip` batches into the epoch
        loader.load_state_dict({"epoch": epoch, "batches": skip, "length": len(loader)})
        loaded = list(loader)
        sampled = SeededBatches(loader.batch_sampler.sampler, seed=cfg.train.seed, skip=skip)
        batches = []
        for keys, (inputs, _) in zip(sampled, loaded, strict=True):
            assert torch.equal(inputs, torch.stack([data.train[k][0] for k in keys]))
            batches.append([data.train.view_of(k) for k in keys])
        return batches

    epoch1 = draws(1)
    assert len(epoch1) == 2
    assert draws(1, skip=1) == epoch1[1:]  # a mid-epoch resume reads the same views
    assert draws(1) == epoch1
    views = [view for batch in epoch1 + draws(2) for _, view in batch]
    assert set(views) == {0, 1}  # both cached views get drawn


def test_resumed_run_equals_the_straight_one(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, train={"epochs": 1})
    train(cfg, tmp_path / "run", progress=False)
    two = _cfg(tmp_path, train={"epochs": 2})
    resumed = train(two, tmp_path / "run", resume=True, progress=False)
    straight = train(two, tmp_path / "straight", progress=False)
    assert resumed == straight


@pytest.mark.parametrize("train_blocks", [1, 0])  # cached activations, cached features
def test_ctrl_c_inside_an_epoch_on_a_cache_resumes_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, train_blocks: int
) -> None:
    from daalml.engine.checkpoint import resume_point
    from tests.engine.test_reliability import _interrupt_at

    views = {"cached_views": 1} if not train_blocks else {}
    cfg = _cfg(tmp_path, train={"epochs": 3}, model={"train_blocks": train_blocks}, data=views)
    assert _data(cfg).activations == bool(train_blocks)
    _interrupt_at(monkeypatch, 2)  # the first step of epoch 1 (2 steps an epoch)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "run", progress=False)
    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert resume_point(saved) == (1, 1)
    monkeypatch.undo()
    resumed = train(cfg, tmp_path / "run", resume=True, progress=False)
    assert resumed == train(cfg, tmp_path / "straight", progress=False)
    weights = [
        load_checkpoint(tmp_path / run / "checkpoints" / "last.ckpt")["state_dict"]
        for run in ("run", "straight")
    ]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[1])


def test_other_split_point_or_views_build_another_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "activations"
    first = _data(_cfg(tmp_path))
    files = set(cache.glob("*.npy"))
    assert len(files) == 4  # train views, train centre, val, test
    two = _cfg(tmp_path, model={"train_blocks": 2})
    second = _data(two)
    assert second.train.array.shape[2:] != first.train.array.shape[2:]
    three = _cfg(tmp_path, data={"cached_views": 3})
    third = _data(three)
    assert third.train.views == 3 and first.train.views == 2
    assert len(set(cache.glob("*.npy"))) == 4 + 4 + 1  # views change the training cache only
    keys = [json.loads(p.with_suffix(".json").read_text())["key"] for p in cache.glob("*.npy")]
    assert {k["point"] for k in keys} == {"small_cnn:1:5", "small_cnn:2:3"}
    torch.manual_seed(1)  # another random trunk: other weights, another cache
    prepare_data(three, build_model(three).backbone)
    assert len(set(cache.glob("*.npy"))) == 9 + 4


def test_export_holds_the_trained_top(tmp_path: Path) -> None:
    from daalml.export import export_model

    cfg = _cfg(tmp_path, train={"cache_dtype": "float32", "epochs": 1})
    train(cfg, tmp_path / "run", progress=False)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    result = export_model(last, tmp_path / "model.pt", format="torchscript")
    module, _ = load_module(last)
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
        expected = module.eval()(images)
        exported = torch.jit.load(str(result.path))(images)
    torch.testing.assert_close(exported, expected, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_bench_top_runs_on_a_tiny_config(tmp_path: Path) -> None:
    import subprocess
    import sys

    import yaml

    cfg = _cfg(tmp_path)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_top.py"
    done = subprocess.run(
        [sys.executable, str(script), "--config", str(path), "--blocks", "1", "--epochs", "2",
         "--full-steps", "1", "--threads", "1", "--json", str(tmp_path / "t.json")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads((tmp_path / "t.json").read_text())
    assert [r["setting"].split(" (")[1] for r in rows] == [
        "train_blocks 0)", "train_blocks 1)", "train_blocks -1)"
    ]  # fmt: skip
    assert rows[1]["cache_bytes"] > rows[0]["cache_bytes"] > 0


def test_a_run_from_before_train_blocks_still_resumes(tmp_path: Path) -> None:
    from daalml.engine.checkpoint import META_KEY, check_resumable

    plain = {"model": {"train_blocks": 0}, "train": {"cache_features": False}}
    config = _cfg(tmp_path, data={"cached_views": 4}, **plain)  # the defaults of these keys
    old = config.to_dict()
    del old["model"]["train_blocks"], old["data"]["cached_views"], old["train"]["cache_dtype"]
    checkpoint = {META_KEY: {"config": old}, "epoch": 0}
    check_resumable(checkpoint, config.to_dict(), tmp_path / "last.ckpt")  # no error
    other = _cfg(
        tmp_path, data={"cached_views": 4}, model={"train_blocks": 1}, train=plain["train"]
    )
    with pytest.raises(DaalmlError, match=r"model\.train_blocks is 1 here but 0 in it"):
        check_resumable(checkpoint, other.to_dict(), tmp_path / "last.ckpt")
