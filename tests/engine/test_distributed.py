"""DDP on the CPU (gloo, 2 processes): the gathered global batch gives single-process gradients.

One spawn of two ranks runs every distributed scenario and saves what each rank saw; the tests
then compare it with a single-process computation here. End to end, `daalml train` with two DDP
processes (Lightning's launcher) must write what one process writes, down to the trained weights;
a slow test adds images and a warm-up epoch. Run with OMP_NUM_THREADS=1 on a small machine.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset

from daalml.data.sampling import MPerClassBatchSampler
from daalml.engine import distributed
from daalml.engine.distributed import gather_batch, gather_tensor, gather_with_grad, shard
from daalml.errors import DaalmlError
from daalml.losses.registry import MetricLoss, build_loss
from tests.data.builders import make_folder
from tests.runs import tiny_run_config

WORLD = 2
IN_DIM, EMBED_DIM, CLASSES = 6, 5, 4
# (loss name, per-rank batch sizes): equal slices as the sampler makes them, and uneven ones
SCENARIOS: dict[str, tuple[str, tuple[int, ...]]] = {
    "daal": ("daal", (4, 4)),
    "daal_uneven": ("daal", (3, 5)),
    "proxy_anchor": ("proxy_anchor", (4, 4)),
    "multi_similarity": ("multi_similarity", (4, 4)),
}
STEPS = 2  # the second step uses the DAAL statistics the first one gathered
SAMPLER_LABELS = np.repeat(np.arange(6), 4)  # 6 classes x 4 images
SAMPLER_ARGS = {"batch_size": 12, "samples_per_class": 2, "seed": 5}


# ---------------------------------------------------------------------------- shared set-up
def _model() -> nn.Module:
    torch.manual_seed(11)
    return nn.Sequential(nn.Linear(IN_DIM, 10), nn.Tanh(), nn.Linear(10, EMBED_DIM)).double()


def _loss(name: str) -> MetricLoss:
    torch.manual_seed(12)
    return build_loss(name, CLASSES, EMBED_DIM).double()


def _batch(step: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Global batch ``step``: m=2 images of each class, shuffled classes, float64 inputs."""
    generator = torch.Generator().manual_seed(100 + step)
    inputs = torch.randn(size, IN_DIM, generator=generator, dtype=torch.float64)
    labels = torch.randperm(CLASSES, generator=generator).repeat_interleave(2)[:size]
    return inputs, labels


class _Step(nn.Module):
    """Model + loss in one module, as Lightning wraps them in DDP: embed, gather, loss."""

    def __init__(self, model: nn.Module, loss: MetricLoss, *, gather: bool = True) -> None:
        super().__init__()
        self.model = model
        self.loss = loss
        self.gather = gather

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        embeddings = self.model(inputs)
        if self.gather:
            embeddings, labels = gather_batch(embeddings, labels)
        return self.loss(embeddings, labels)


def _train(
    step_module: nn.Module, slice_of: Callable[[torch.Tensor], torch.Tensor], sizes: tuple[int, ...]
) -> dict[str, Any]:
    """STEPS SGD steps; the losses, final gradients and loss buffers."""
    optimizer = torch.optim.SGD(step_module.parameters(), lr=0.1)
    losses = []
    for step in range(STEPS):
        optimizer.zero_grad()
        inputs, labels = _batch(step, sum(sizes))
        loss = step_module(slice_of(inputs), slice_of(labels))
        loss.backward()
        losses.append(loss.item())
        if step + 1 < STEPS:
            optimizer.step()
    inner = step_module.module if isinstance(step_module, DistributedDataParallel) else step_module
    return {
        "losses": losses,
        "model_grads": [p.grad.clone() for p in inner.model.parameters()],
        "loss_grads": [p.grad.clone() for p in inner.loss.parameters() if p.requires_grad],
        "buffers": {k: v.clone() for k, v in inner.loss.named_buffers()},
    }


# ---------------------------------------------------------------------------- the two ranks
def _rank_scenario(rank: int, name: str, sizes: tuple[int, ...]) -> dict[str, Any]:
    start = sum(sizes[:rank])

    def local(tensor: torch.Tensor) -> torch.Tensor:
        return tensor[start : start + sizes[rank]]

    step = DistributedDataParallel(_Step(_model(), _loss(name)))
    result = _train(step, local, sizes)
    # negative control: the same step without the gather sees only the local slice
    inputs, labels = _batch(0, sum(sizes))
    with torch.no_grad():
        result["local_loss"] = _Step(_model(), _loss(name), gather=False)(
            local(inputs), local(labels)
        ).item()
    return result


def _rank_sampler(rank: int) -> dict[str, Any]:
    """Each rank's batches through a DataLoader, and the batches gathered across ranks."""
    sampler = MPerClassBatchSampler(SAMPLER_LABELS, num_replicas=WORLD, rank=rank, **SAMPLER_ARGS)
    dataset = TensorDataset(torch.arange(len(SAMPLER_LABELS)))
    epochs = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        loader = DataLoader(dataset, batch_sampler=sampler)
        local = [batch[0] for batch in loader]
        epochs.append({"local": local, "gathered": [gather_tensor(b) for b in local]})
    return {"epochs": epochs}


def _rank_eval_gather(rank: int) -> dict[str, Any]:
    """Uneven and empty evaluation shards, gathered back."""
    out = {}
    for length in (5, 1):
        rows = torch.arange(length, dtype=torch.float32)[list(shard(length, WORLD, rank))]
        out[length] = gather_tensor(rows[:, None].repeat(1, 3), device="cpu").clone()
    x = torch.full((rank + 1, 2), float(rank + 1), requires_grad=True)
    gathered = gather_with_grad(x)
    (gathered * torch.arange(1, gathered.shape[0] + 1)[:, None]).sum().backward()
    out["grad"] = x.grad.clone()
    out["world"] = distributed.world()
    return out


def _rank_embed_sharded(rank: int) -> dict[str, Any]:
    """The test-set embedding after training: each rank embeds its share, all get everything."""
    from daalml.engine.inference import embed_sharded

    rows = torch.arange(21, dtype=torch.float32).reshape(7, 3)
    dataset = TensorDataset(rows, torch.arange(7) % 3)
    seen: list[int] = []

    def fn(inputs: torch.Tensor) -> torch.Tensor:
        seen.extend(inputs[:, 0].long().div(3, rounding_mode="floor").tolist())
        return inputs * 2

    embeddings, labels = embed_sharded(fn, dataset, batch_size=2, device=torch.device("cpu"))
    return {"embeddings": embeddings, "labels": labels, "seen": seen}


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        results: dict[str, Any] = {
            name: _rank_scenario(rank, loss, sizes) for name, (loss, sizes) in SCENARIOS.items()
        }
        results["sampler"] = _rank_sampler(rank)
        results["eval"] = _rank_eval_gather(rank)
        results["embed_sharded"] = _rank_embed_sharded(rank)
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        # DDP wrappers caught in reference cycles would otherwise be freed after the process
        # group, at interpreter exit, where gloo aborts the process about one run in three
        gc.collect()
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """What each of the two gloo ranks computed (one spawn for all scenarios)."""
    folder = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(str(folder / "init"), str(folder)), nprocs=WORLD, join=True)
    return [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


# ---------------------------------------------------------------------------- tests
def _assert_close(actual: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    assert len(actual) == len(expected) > 0
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_two_ranks_match_one_process(ranks: list[dict[str, Any]], scenario: str) -> None:
    name, sizes = SCENARIOS[scenario]
    reference = _train(_Step(_model(), _loss(name)), lambda t: t, sizes)
    for rank in ranks:
        got = rank[scenario]
        assert got["losses"] == pytest.approx(reference["losses"], rel=1e-12)
        _assert_close(got["model_grads"], reference["model_grads"])  # after DDP's averaging
        if name != "multi_similarity":  # the pair loss has no parameters of its own
            _assert_close(got["loss_grads"], reference["loss_grads"])
        for key, value in reference["buffers"].items():  # DAAL's statistics, on every rank
            torch.testing.assert_close(got["buffers"][key], value, rtol=1e-10, atol=1e-12)
    # without the gather a rank would compute a different loss on its slice alone
    for rank in ranks:
        assert rank[scenario]["local_loss"] != pytest.approx(reference["losses"][0], rel=1e-6)


def test_daal_statistics_are_filled(ranks: list[dict[str, Any]]) -> None:
    buffers = ranks[0]["daal"]["buffers"]
    assert bool(buffers["loss.seen"].all()) and bool((buffers["loss.sigma_perp"] > 0).all())


def test_sampler_under_ddp_splits_each_global_batch(ranks: list[dict[str, Any]]) -> None:
    single = MPerClassBatchSampler(SAMPLER_LABELS, **SAMPLER_ARGS)
    for epoch in range(2):
        single.set_epoch(epoch)
        expected = [torch.tensor(b) for b in single]
        local = [rank["sampler"]["epochs"][epoch]["local"] for rank in ranks]
        for b, batch in enumerate(expected):
            assert torch.equal(torch.cat([local[r][b] for r in range(WORLD)]), batch)
            for r in range(WORLD):
                assert torch.equal(ranks[r]["sampler"]["epochs"][epoch]["gathered"][b], batch)
                counts = np.bincount(SAMPLER_LABELS[local[r][b].numpy()])
                assert set(counts[counts > 0]) == {SAMPLER_ARGS["samples_per_class"]}
        # every image exactly once per epoch: nothing duplicated across ranks, nothing dropped
        seen = torch.cat([torch.cat(local[r]) for r in range(WORLD)])
        assert sorted(seen.tolist()) == list(range(len(SAMPLER_LABELS)))


def test_evaluation_shards_gather_back_in_order(ranks: list[dict[str, Any]]) -> None:
    for rank in ranks:
        for length in (5, 1):
            expected = torch.arange(length, dtype=torch.float32)[:, None].repeat(1, 3)
            assert torch.equal(rank["eval"][length], expected)
    assert [rank["eval"]["world"] for rank in ranks] == [(2, 0), (2, 1)]


def test_test_set_is_embedded_in_shares_and_gathered_in_order(
    ranks: list[dict[str, Any]],
) -> None:
    assert [r["embed_sharded"]["seen"] for r in ranks] == [[0, 1, 2, 3], [4, 5, 6]]
    for r in ranks:
        torch.testing.assert_close(
            r["embed_sharded"]["embeddings"], 2 * torch.arange(21.0).reshape(7, 3)
        )
        assert r["embed_sharded"]["labels"].tolist() == [0, 1, 2, 0, 1, 2, 0]


def test_gather_backward_sums_every_ranks_gradient(ranks: list[dict[str, Any]]) -> None:
    # both ranks weight gathered row i by i + 1; rank 0 owns row 0, rank 1 rows 1-2
    assert torch.equal(ranks[0]["eval"]["grad"], torch.full((1, 2), 2.0))
    assert torch.equal(ranks[1]["eval"]["grad"], torch.tensor([[4.0, 4.0], [6.0, 6.0]]))


# ---------------------------------------------------------------------------- single process
def test_without_process_group_everything_is_unchanged() -> None:
    x, y = torch.randn(3, 2, requires_grad=True), torch.tensor([0, 1, 0])
    gx, gy = gather_batch(x, y)
    assert gx is x and gy is y
    assert gather_tensor(y) is y and gather_with_grad(x) is x
    assert distributed.world() == (1, 0) and not distributed.is_distributed()


def test_gather_errors_name_the_problem() -> None:
    with pytest.raises(DaalmlError, match="3 embeddings but 2 labels"):
        gather_batch(torch.zeros(3, 2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(DaalmlError, match="0-d tensor"):
        gather_tensor(torch.tensor(1.0))


@pytest.mark.parametrize("length", [0, 1, 5, 7, 8])
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_shard_covers_range_in_order(length: int, world_size: int) -> None:
    shares = [shard(length, world_size, r) for r in range(world_size)]
    assert [i for share in shares for i in share] == list(range(length))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_shard_rejects_bad_rank() -> None:
    with pytest.raises(DaalmlError, match=r"rank 2 is not in 0\.\.1"):
        shard(4, 2, 2)
    with pytest.raises(DaalmlError, match="length must be non-negative"):
        shard(-1, 2, 0)


def test_local_rank_from_launcher_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert distributed.launched_local_rank() == 0
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert distributed.launched_local_rank() == 3
    monkeypatch.setenv("LOCAL_RANK", "gpu1")
    with pytest.raises(DaalmlError, match="LOCAL_RANK='gpu1' is not an integer"):
        distributed.launched_local_rank()


def test_validation_smaller_than_the_process_count_is_refused() -> None:
    from daalml.config import config_from_dict
    from daalml.engine.data import LabelledTensors, RunData
    from daalml.engine.datamodule import check_processes

    one = LabelledTensors(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))
    data = RunData(train=one, num_train_classes=1, test=one, val=one)
    cfg = config_from_dict({"train": {"devices": 2, "batch_size": 8, "val_classes": 1}})
    with pytest.raises(DaalmlError, match="validation split has 1 images, fewer than the 2"):
        check_processes(data, cfg, 2)
    check_processes(data, cfg, 1)


def test_strategy_is_ddp_only_for_several_processes() -> None:
    from lightning.pytorch.strategies import DDPStrategy

    from daalml.config import TrainConfig

    assert distributed.strategy(TrainConfig(devices=1, num_nodes=1)) == "auto"
    several = distributed.strategy(TrainConfig(devices=2, num_nodes=1))
    assert isinstance(several, DDPStrategy)
    assert several._ddp_kwargs.get("find_unused_parameters") is False
    warming = distributed.strategy(TrainConfig(devices=1, num_nodes=2, warmup_epochs=1))
    assert warming._ddp_kwargs.get("find_unused_parameters") is True


# ---------------------------------------------------------------------------- end to end
def _config(tmp: Path) -> Path:
    config = tiny_run_config(
        make_folder(tmp / "ds", n_classes=12, per_class=4, size=40),
        tmp / "cache",
        train={
            "cache_features": True,  # no augmentation: the two runs see identical inputs
            "val_classes": 2,
            "scheduler": "none",
        },
    )
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _daalml_train(config: Path, output: Path, devices: int, extra: tuple[str, ...] = ()) -> None:
    script = Path(sys.executable).with_name("daalml")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "daalml"]
    # a plain machine to Lightning: no rank or cluster variables of an outer launcher or SLURM job
    launcher = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "WORLD_SIZE", "MASTER_ADDR")
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in launcher and not name.startswith(("SLURM_", "TORCHELASTIC_", "MASTER_"))
    }
    env["OMP_NUM_THREADS"] = "1"
    # each run fills its own feature cache: a cache hit draws fewer random numbers than a
    # miss before the loss is initialised, so runs must agree on hit or miss to compare
    cache = output.with_name(f"{output.name}-cache")
    args = ["train", str(config), "--output", str(output), "--set", "train.accelerator=cpu"]
    for item in extra:
        args += ["--set", item]
    result = subprocess.run(
        [*command, *args, "--set", f"train.devices={devices}", "--set", f"train.cache_dir={cache}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]


def test_two_process_training_writes_what_one_process_writes(tmp_path: Path) -> None:
    config = _config(tmp_path)
    _daalml_train(config, tmp_path / "one", devices=1)
    _daalml_train(config, tmp_path / "two", devices=2)

    def files(run: Path) -> set[str]:
        # TensorBoard's event file names carry a time stamp and a process id
        return {
            str(p.relative_to(run).parent / "events")
            if "tfevents" in p.name
            else str(p.relative_to(run))
            for p in run.rglob("*")
            if p.is_file()
        }

    assert files(tmp_path / "one") == files(tmp_path / "two")
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert set(one) == set(two) and "recall@1" in two
    assert two["recall@1"] == pytest.approx(one["recall@1"], abs=1e-6)
    # the same gradients step after step: the trained weights agree to float32 rounding
    weights = [
        torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
        for run in (tmp_path / "one", tmp_path / "two")
    ]
    assert set(weights[0]) == set(weights[1])
    for key, value in weights[0].items():
        torch.testing.assert_close(weights[1][key], value, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_two_process_warm_up_on_images(tmp_path: Path) -> None:
    """Images, augmentation and a warm-up epoch: DDP copes with the backbone's gradients
    switched off and back on (find_unused_parameters)."""
    config = _config(tmp_path)
    output = tmp_path / "run"
    _daalml_train(
        config,
        output,
        devices=2,
        extra=("train.cache_features=false", "train.warmup_epochs=1", "train.epochs=2"),
    )
    metrics = json.loads((output / "metrics.json").read_text())
    assert 0.0 <= metrics["recall@1"] <= 1.0
    log = (output / "logs" / "metrics.csv").read_text().splitlines()
    epochs = {row.split(",")[0] for row in log[1:]}
    assert epochs == {"0", "1"}  # the warm-up epoch and one with the backbone training
