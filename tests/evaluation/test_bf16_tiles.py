"""The tiled search with bf16 products: the GEMM-order dots, their probe, the certificate,
and the same neighbours and scores as the exact path on every kind of data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import daalml.evaluation.bf16_candidates as C
import daalml.evaluation.gemm_dots as G
import daalml.evaluation.knn_backends as K
import daalml.evaluation.knn_heaps as H
from daalml.metrics import knn

SETTINGS = settings(max_examples=25, deadline=None)


def order_found(dim: int) -> np.ndarray:
    """This machine's GEMM order for ``dim``, or skip: a BLAS that adds in an order outside
    the split family cannot run the bf16 products (``"auto"`` keeps fp32 tiles there)."""
    bounds = G.split(dim)
    if bounds is None:
        pytest.skip(f"this BLAS adds d={dim} in an order gemm_dots does not reproduce")
    return bounds


def random_unit(n: int, d: int, seed: int) -> torch.Tensor:
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.normalize(x, dim=1)


def clustered(n: int, d: int, per_class: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(max(1, n // per_class), d, generator=gen)
    labels = torch.randint(0, centres.shape[0], (n,), generator=gen)
    return torch.nn.functional.normalize(centres[labels] + torch.randn(n, d, generator=gen), dim=1)


# --- the dots in the GEMM's order --------------------------------------------------------


@SETTINGS
@given(st.integers(1, 700), st.integers(16, 80), st.integers(16, 80), st.integers(0, 2**16))
def test_dots_have_the_bits_of_torch_mm(dim: int, m: int, n: int, seed: int) -> None:
    bounds = order_found(dim)
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(m, dim, generator=gen) * 3
    b = torch.randn(n, dim, generator=gen)
    cand = np.tile(np.arange(n), (m, 1))
    assert np.array_equal(G.dots(a, b, cand, bounds), (a @ b.T).numpy())


def test_dots_leave_negative_candidates_and_those_past_the_counts_at_minus_inf() -> None:
    bounds = order_found(64)
    a, b = random_unit(16, 64, 0), random_unit(16, 64, 1)  # 16 rows: MKL's usual kernel
    cand = np.array([[4, -1, 2, 9, 0, 1, 3, 5, 6, 7], [1, 2, 3, 4, 5, 6, 7, 8, 9, 0],
                     [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]])
    out = G.dots(a[:3], b, cand, bounds, np.array([10, 3, 0]))
    full = (a @ b.T).numpy()
    assert out[0, 1] == -np.inf and out[0, 0] == full[0, 4] and out[0, 9] == full[0, 7]
    assert out[1, :3].tolist() == full[1, 1:4].tolist() and np.all(out[1, 3:] == -np.inf)
    assert np.all(out[2] == -np.inf)


@SETTINGS
@given(st.integers(40, 120), st.integers(1, 30), st.integers(1, 40), st.integers(0, 2**16))
def test_symmetric_dots_reuse_pairs_with_the_same_bits(
    n: int, width: int, room: int, seed: int
) -> None:
    """Rows in order, in blocks, with random candidates (some negative, some past the
    counts): the same values as plain dots, and the memo holds only earlier rows, ascending,
    within its room."""
    bounds = order_found(48)
    x = random_unit(n, 48, seed)
    rng = np.random.default_rng(seed)
    # distinct columns a row, never its own, some missing (-1)
    cand = np.stack([rng.permutation(np.delete(np.arange(n), i))[:width] for i in range(n)])
    cand[rng.random(cand.shape) < 0.1] = -1
    counts = rng.integers(0, width + 1, n)
    memo = G.Memo(x.shape[0], room)
    done = []
    for start in range(0, n, 16):
        stop = min(start + 16, n)
        done.append(G.symmetric_dots(x, start, cand[start:stop], bounds, counts[start:stop], memo))
    got = np.concatenate(done)
    want = G.dots(x, x, cand, bounds, counts)
    assert np.array_equal(got, want)
    for j in range(n):
        cols = memo.cols[j, : memo.count[j]]
        assert memo.count[j] <= room and np.all(np.diff(cols) > 0) and np.all(cols < j)


def test_the_probe_gives_none_where_no_split_reproduces_the_gemm(monkeypatch) -> None:
    # a one-block chain is not this BLAS's order at d = 512 unless it adds that way
    wrong = [np.array([0, 1, 512])]
    monkeypatch.setattr(G, "_candidate_bounds", lambda dim: wrong)
    assert G._probe(512) is None


def test_the_split_family_covers_every_block_size() -> None:
    sizes = {int(b[1]) if len(b) > 2 else 512 for b in G._candidate_bounds(512)}
    assert sizes == set(range(1, 513))
    assert G._candidate_bounds(512)[0].tolist() == [0, 192, 384, 512]


# --- the search ----------------------------------------------------------------------------


def both(q: torch.Tensor, g: torch.Tensor, k: int, exclude_self: bool) -> tuple:
    """The exact path's and the bf16 products' (scores, indices) on the same operands."""
    blocks = list(K.iter_knn(q, g, k, exclude_self=exclude_self, chunk_size=256, backend="exact"))
    exact = torch.cat([b[1] for b in blocks]), torch.cat([b[2] for b in blocks])
    blocks = list(H.iter_blocks(q, g, k, exclude_self=exclude_self, products="bf16"))
    bf16 = torch.cat([b[1] for b in blocks]), torch.cat([b[2] for b in blocks])
    return exact, bf16


@pytest.mark.parametrize("exclude_self", [True, False])
@pytest.mark.parametrize("data", ["random", "clustered", "duplicates"])
def test_same_neighbours_and_scores_as_exact(data: str, exclude_self: bool) -> None:
    order_found(64)
    x = {"random": random_unit(1600, 64, 0), "clustered": clustered(1600, 64, 20, 1)}.get(data)
    if x is None:  # every vector three times: exact ties broken by lower index
        x = random_unit(540, 64, 2).repeat(3, 1)[torch.randperm(1620, generator=torch.Generator().manual_seed(0))]
    g = x if exclude_self else x[100:]
    q = x if exclude_self else x[:700]
    exact, bf16 = both(q, g, 25, exclude_self)
    assert torch.equal(exact[1], bf16[1]) and torch.equal(exact[0], bf16[0])


def test_knn_backend_tiled_bf16_equals_exact_at_d512() -> None:
    order_found(512)
    x = clustered(1200, 512, 30, 3)
    exact = knn(x, x, 40, exclude_self=True, backend="exact")
    got = knn(x, x, 40, exclude_self=True, backend="tiled-bf16")
    assert torch.equal(exact[1], got[1]) and torch.equal(exact[0], got[0])


def test_rows_without_a_certificate_are_redone(monkeypatch) -> None:
    order_found(64)
    redone = []
    top = C.Rescorer.top

    def no_bound(self, start, approx, cand, left_out):
        scores, indices, _ = top(self, start, approx, cand, left_out)
        scores[:, :] = 0.0  # garbage, as a row would be without its certificate
        redone.append(torch.arange(scores.shape[0]))
        return scores, indices, torch.arange(scores.shape[0])

    monkeypatch.setattr(C.Rescorer, "top", no_bound)
    x = random_unit(1100, 64, 4)
    exact, bf16 = both(x, x, 10, True)
    assert torch.equal(exact[1], bf16[1]) and torch.equal(exact[0], bf16[0])
    assert sum(r.numel() for r in redone) == 1100


@pytest.mark.parametrize("data", ["clustered", "tight"])
def test_most_rows_are_proved_and_a_narrower_bound_would_err(data: str, monkeypatch) -> None:
    """The certificate proves nearly every row. In tight clusters (32 members within 1e-3 of
    their centre, k = 20) the members' scores differ far below bf16's resolution, so the k
    best by bf16 score are not the k best: a certificate without the bf16 error errs."""
    order_found(512)
    if data == "clustered":
        x, k = clustered(2048, 512, 40, 5), 45
    else:
        gen = torch.Generator().manual_seed(5)
        centres = torch.nn.functional.normalize(torch.randn(64, 512, generator=gen), dim=1)
        x = centres.repeat_interleave(32, 0) + 1e-3 * torch.randn(2048, 512, generator=gen)
        x, k = torch.nn.functional.normalize(x, dim=1), 20
    redo = []
    finish = H._finish

    def count(*args, **kwargs):
        out = finish(*args, **kwargs)
        redo.append(out[2].numel())
        return out

    monkeypatch.setattr(H, "_finish", count)
    exact, bf16 = both(x, x, k, True)
    assert torch.equal(exact[1], bf16[1]) and torch.equal(exact[0], bf16[0])
    assert sum(redo) < 0.01 * 2048 and C.bf16_plan(x, x, k, True) == C.bf16_kept(k)
    # the k best by bf16 score, taken as proved (the certificate's bound, on a row's
    # largest score left out, made to pass; the rescored prefix's bound left as it is)
    bound = C.bf16_score_bound
    monkeypatch.setattr(C, "bf16_kept", lambda k: k)
    monkeypatch.setattr(
        C, "bf16_score_bound", lambda b, err: bound(b, err) if err.dim() == 2 else b - 1.0
    )
    _, narrow = both(x, x, k, True)
    assert not torch.equal(exact[1], narrow[1])


def test_the_plan_refuses_scores_crowding_at_the_kth() -> None:
    """Clusters of 256 members within 1e-3 of their centre: a row's 20th score has its 255
    cluster mates within the bf16 error, far more candidates than are kept; clustered
    data at the benchmark's scale, and random 512-d vectors, pass."""
    gen = torch.Generator().manual_seed(7)
    centres = torch.nn.functional.normalize(torch.randn(16, 128, generator=gen), dim=1)
    tight = centres.repeat_interleave(256, 0) + 1e-3 * torch.randn(4096, 128, generator=gen)
    tight = torch.nn.functional.normalize(tight, dim=1)
    assert C.bf16_plan(tight, tight, 20, True) is None
    for x in (clustered(20000, 512, 50, 8), random_unit(20000, 512, 7)):
        assert C.bf16_plan(x, x, 69, True) == C.bf16_kept(69)


def test_kept_candidates() -> None:
    assert C.bf16_kept(1) == 33 and C.bf16_kept(69) == 69 + 46 and C.bf16_kept(300) == 500


# --- the choice ----------------------------------------------------------------------------


def test_auto_picks_bf16_products_only_where_they_apply(monkeypatch) -> None:
    cpu, big = torch.device("cpu"), {"n_gallery": 10**5, "k": 10}
    monkeypatch.setattr(K, "bf16_speedup", lambda: 2.0)
    monkeypatch.setattr(G, "split", lambda dim: np.array([0, dim]))
    assert K.resolve_backend("auto", cpu, 10**10, dim=512, **big) == "tiled-bf16"
    assert K.resolve_backend("auto", cpu, 10**10, **big) == "tiled"  # no dimension given
    assert K.resolve_backend("auto", torch.device("cuda"), 10**10, dim=512, **big) == "tiled"
    monkeypatch.setattr(K, "bf16_speedup", lambda: 1.2)
    assert K.resolve_backend("auto", cpu, 10**10, dim=512, **big) == "tiled"
    monkeypatch.setattr(K, "bf16_speedup", lambda: 2.0)
    monkeypatch.setattr(G, "split", lambda dim: None)
    assert K.resolve_backend("auto", cpu, 10**10, dim=512, **big) == "tiled"
    assert K.resolve_backend("tiled-bf16", cpu, 1) == "tiled-bf16"


@pytest.fixture
def searches(monkeypatch) -> list[tuple[str, int | None]]:
    """The (products, kept) of every heap search run while the test runs."""
    seen: list[tuple[str, int | None]] = []
    iter_blocks = H.iter_blocks

    def spy(*args, **kwargs):
        seen.append((kwargs["products"], kwargs["kept"]))
        return iter_blocks(*args, **kwargs)

    monkeypatch.setattr(H, "iter_blocks", spy)
    return seen


def test_tiled_bf16_runs_fp32_tiles_where_the_order_is_unknown(monkeypatch, searches) -> None:
    monkeypatch.setattr(G, "split", lambda dim: None)
    seen = searches
    x = random_unit(600, 32, 6)
    got = knn(x, x, 5, exclude_self=True, backend="tiled-bf16")
    assert seen == [("fp32", None)]
    assert torch.equal(got[1], knn(x, x, 5, exclude_self=True, backend="exact")[1])


def test_auto_runs_fp32_tiles_where_the_plan_refuses(monkeypatch, searches) -> None:
    monkeypatch.setattr(K, "bf16_tiles_apply", lambda device, dim: True)
    seen = searches
    x = random_unit(4200, 32, 9)
    for plan in (None, 30):
        monkeypatch.setattr(C, "bf16_plan", lambda *args, plan=plan: plan)
        knn(x, x, 5, exclude_self=True)
        knn(x, x, 5, exclude_self=True, backend="tiled-bf16")  # asked for: run anyway
    assert seen == [("fp32", None), ("bf16", C.bf16_kept(5)), ("bf16", 30), ("bf16", 30)]


def test_iter_blocks_rejects_unknown_products() -> None:
    x = random_unit(40, 8, 0)
    with pytest.raises(ValueError, match="products"):
        list(H.iter_blocks(x, x, 3, exclude_self=True, products="fp16"))
