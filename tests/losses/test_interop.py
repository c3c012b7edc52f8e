"""DAALLoss as a pytorch-metric-learning loss: wrappers, miners, ref_emb, torch.compile, dtypes."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning.utils.distributed import DistributedLossWrapper

from daalml import DAALLoss

C, D = 6, 8
WORLD = 2


def _degenerate(margin: float = 0.1) -> tuple[DAALLoss, pml_losses.ProxyAnchorLoss]:
    """A DAAL reduced to Proxy-Anchor (a = b, kappa = 0, no elastic term) and that PA."""
    torch.manual_seed(0)
    daal = DAALLoss(C, D, delta=margin, kappa=0.0, lambda_len=0.0).double()
    with torch.no_grad():
        daal.vertices[:, 1] = daal.vertices[:, 0]
    proxy_anchor = pml_losses.ProxyAnchorLoss(C, D, margin=margin, alpha=32.0).double()
    with torch.no_grad():
        proxy_anchor.proxies.copy_(daal.vertices[:, 0])
    return daal, proxy_anchor


def _batch(seed: int, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(C).repeat(size // C + 1)[:size]
    return torch.randn(size, D, generator=gen, dtype=torch.float64), labels


def _value_and_grad(loss_fn: Any, x: torch.Tensor, *args: Any) -> tuple[torch.Tensor, ...]:
    x = x.clone().requires_grad_()
    value = loss_fn(x, *args)
    value.backward()
    return value.detach(), x.grad


def test_is_a_pml_loss_and_keeps_its_own_call():
    from pytorch_metric_learning.losses import BaseMetricLossFunction

    loss_fn = DAALLoss(C, D)
    assert isinstance(loss_fn, BaseMetricLossFunction)
    x, y = _batch(0)
    assert torch.isfinite(loss_fn(x.float(), y))
    assert {"vertices", "sigma_perp", "sigma_par", "seen", "seen_par"} <= set(loss_fn.state_dict())
    assert [name for name, _ in loss_fn.named_parameters()] == ["vertices"]


@pytest.mark.parametrize(
    "miner_cls", [pml_miners.MultiSimilarityMiner, pml_miners.TripletMarginMiner]
)
def test_miner_output_weights_samples_as_proxy_anchor_does(miner_cls):
    daal, proxy_anchor = _degenerate()
    x, y = _batch(1)
    tuples = miner_cls()(x, y)
    assert sum(len(t) for t in tuples) > 0
    ours = _value_and_grad(daal, x, y, tuples)
    theirs = _value_and_grad(proxy_anchor, x, y, tuples)
    plain = _value_and_grad(daal, x, y)
    torch.testing.assert_close(ours[0], theirs[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours[1], theirs[1], rtol=1e-10, atol=1e-12)
    assert not torch.allclose(ours[0], plain[0])  # the miner output changed something


def test_vertex_gradient_with_miner_matches_proxy_anchor():
    daal, proxy_anchor = _degenerate()
    x, y = _batch(2)
    tuples = pml_miners.MultiSimilarityMiner()(x, y)
    daal(x, y, tuples).backward()
    proxy_anchor(x, y, tuples).backward()
    torch.testing.assert_close(daal.vertices.grad[:, 0], proxy_anchor.proxies.grad)


def test_multiple_losses():
    daal, proxy_anchor = _degenerate()
    combined = pml_losses.MultipleLosses([daal, proxy_anchor], weights=[1.0, 0.5])
    x, y = _batch(3)
    value = combined(x, y)
    torch.testing.assert_close(value, 1.5 * proxy_anchor(x, y), rtol=1e-12, atol=1e-12)
    miners = [pml_miners.MultiSimilarityMiner(), None]
    mined = pml_losses.MultipleLosses([daal, proxy_anchor], miners=miners)
    tuples = pml_miners.MultiSimilarityMiner()(x, y)
    expected = proxy_anchor(x, y, tuples) + proxy_anchor(x, y)
    torch.testing.assert_close(mined(x, y), expected, rtol=1e-12, atol=1e-12)


def test_ref_emb_follows_pml_proxy_losses():
    """PML's proxy losses accept ref_emb only when it is the batch itself; so does DAAL."""
    daal, proxy_anchor = _degenerate()
    x, y = _batch(4)
    torch.testing.assert_close(daal(x, y, None, x, y), proxy_anchor(x, y, None, x, y))
    other, other_labels = _batch(5)
    for loss_fn in (proxy_anchor, daal):
        with pytest.raises(ValueError, match="ref_emb is not supported"):
            loss_fn(x, y, None, other, other_labels)


def test_distributed_wrapper_outside_a_process_group():
    daal, proxy_anchor = _degenerate()
    x, y = _batch(6)
    with pytest.warns(UserWarning, match="non-distributed"):
        ours = DistributedLossWrapper(daal)(x, y)
    with pytest.warns(UserWarning, match="non-distributed"):
        theirs = DistributedLossWrapper(proxy_anchor)(x, y)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def _wrapper_worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        x, y = _batch(7, size=12)
        local = slice(6 * rank, 6 * rank + 6)
        results = {}
        for name, loss_fn in zip(("daal", "proxy_anchor"), _degenerate(), strict=True):
            value, grad = _value_and_grad(DistributedLossWrapper(loss_fn), x[local], y[local])
            results[name] = {"value": value, "grad": grad}
        torch.manual_seed(1)
        full = DAALLoss(C, D, kappa=1.0).double()  # statistics are measured on the whole batch
        DistributedLossWrapper(full)(x[local].clone().requires_grad_(), y[local])
        results["buffers"] = {k: v.clone() for k, v in full.named_buffers()}
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        gc.collect()
        dist.destroy_process_group()


def test_distributed_wrapper_two_ranks(tmp_path: Path):
    """Two gloo ranks, half a batch each: DAAL under DistributedLossWrapper gives what PML's
    Proxy-Anchor gives there (PML's own convention: loss of the gathered batch times the world
    size), and every rank measures its statistics on the gathered batch."""
    mp.spawn(_wrapper_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    x, y = _batch(7, size=12)
    torch.manual_seed(1)
    single = DAALLoss(C, D, kappa=1.0).double()
    single(x, y)
    daal, _ = _degenerate()
    value, grad = _value_and_grad(daal, x, y)
    for rank, got in enumerate(ranks):
        torch.testing.assert_close(got["daal"]["value"], got["proxy_anchor"]["value"])
        torch.testing.assert_close(got["daal"]["grad"], got["proxy_anchor"]["grad"])
        torch.testing.assert_close(got["daal"]["value"], WORLD * value)
        torch.testing.assert_close(got["daal"]["grad"], WORLD * grad[6 * rank : 6 * rank + 6])
        for key, buffer in single.named_buffers():
            torch.testing.assert_close(got["buffers"][key], buffer)


def test_compile_fullgraph_has_no_graph_break():
    """fullgraph=True fails on any graph break; the eager backend keeps this test fast."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = DAALLoss(C, D)
    compiled_module = DAALLoss(C, D)
    compiled_module.load_state_dict(eager.state_dict())
    compiled = torch.compile(compiled_module, fullgraph=True, backend="eager")
    for step in range(2):  # training mode: the statistics update is in the graph too
        x, y = _batch(8 + step)
        torch.testing.assert_close(compiled(x.float(), y), eager(x.float(), y))
    assert compiled_module.seen.all()
    for key, value in eager.state_dict().items():
        torch.testing.assert_close(compiled_module.state_dict()[key], value)


@pytest.mark.slow
def test_compile_fullgraph_inductor_matches_eager():
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = DAALLoss(C, D)
    compiled_module = DAALLoss(C, D)
    compiled_module.load_state_dict(eager.state_dict())
    compiled = torch.compile(compiled_module, fullgraph=True)
    for step in range(3):
        x, y = _batch(9 + step)
        a, ga = _value_and_grad(eager, x.float(), y)
        b, gb = _value_and_grad(compiled, x.float(), y)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-6)
    for key, value in eager.state_dict().items():
        torch.testing.assert_close(compiled_module.state_dict()[key], value, rtol=1e-5, atol=1e-6)


def test_label_check_keeps_its_one_line_error_in_eager_mode():
    loss_fn = DAALLoss(4, 3)
    with pytest.raises(
        ValueError, match=r"^label 4 is outside \[0, 4\) for this loss's 4 classes$"
    ):
        loss_fn(torch.randn(2, 3), torch.tensor([0, 4]))


@pytest.mark.parametrize("module_dtype", [torch.float32, torch.float64])
def test_float64_inputs_give_float64_margins_and_proxy_anchor(module_dtype):
    daal, proxy_anchor = _degenerate(margin=0.1)
    daal = daal.to(module_dtype)
    with torch.no_grad():
        proxy_anchor.proxies.copy_(daal.vertices[:, 0].double())
    assert daal.margins().dtype == module_dtype
    assert daal.margins(torch.float64).dtype == torch.float64
    assert daal.margins(torch.float64)[0].item() == 0.1
    for step in range(3):
        x, y = _batch(20 + step)
        ours = _value_and_grad(daal, x, y)
        theirs = _value_and_grad(proxy_anchor, x, y)
        torch.testing.assert_close(ours[0], theirs[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(ours[1], theirs[1], rtol=1e-10, atol=1e-13)
