"""Tests for the metric options: distance, categories, mask_to_ignore / ignore_groups and the
count of queries without a relevant item, against PML and a brute-force numpy reference."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

from daalml.cli.shell import metrics_table
from daalml.errors import DaalmlError
from daalml.metrics import knn, query_gallery_metrics, retrieval_metrics

RANK_KEYS = ("recall@1", "recall@2", "recall@4", "recall@8", "map@r", "r_precision")
PML_KEYS = {
    "recall@1": "precision_at_1",
    "r_precision": "r_precision",
    "map@r": "mean_average_precision_at_r",
}


def blobs(n_classes: int, per_class: int, d: int, seed: int, ties: bool) -> tuple:
    """Raw (unnormalised) Gaussian blobs with norms spread over 0.5-5; with ``ties`` a
    quarter of the samples are exact copies of another sample of their class."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), per_class)
    x = rng.standard_normal((n_classes, d))[y] + 0.9 * rng.standard_normal((y.shape[0], d))
    x *= rng.uniform(0.5, 5.0, size=(y.shape[0], 1))
    if ties:
        for i in range(0, y.shape[0], 4):
            x[i + 1] = x[i]  # same class: PML's tie order cannot change its metrics
    perm = rng.permutation(y.shape[0])
    return x[perm], y[perm]


def pml(query, query_labels, reference=None, reference_labels=None) -> dict[str, float]:
    calc = AccuracyCalculator(
        include=tuple(PML_KEYS.values()), k="max_bin_count", device=torch.device("cpu")
    )
    if reference is None:
        return calc.get_accuracy(query, query_labels)
    return calc.get_accuracy(query, query_labels, reference, reference_labels, False)


def reference_metrics(
    scores: np.ndarray,
    query_labels: np.ndarray,
    gallery_labels: np.ndarray,
    ignore: np.ndarray,
    ks: tuple[int, ...] = (1, 2, 4, 8),
    rows: np.ndarray | None = None,
) -> dict[str, float | int]:
    """Brute force: each query ranks the items it does not ignore by score (larger first),
    ties by lower index; queries (of ``rows``) without a relevant item are counted apart."""
    hits, ap, rp, without = [], [], [], 0
    for i in range(scores.shape[0]) if rows is None else np.flatnonzero(rows):
        cand = np.flatnonzero(~ignore[i])
        order = cand[np.lexsort((cand, -scores[i, cand]))]
        rel = gallery_labels[order] == query_labels[i]
        r = int(rel.sum())
        if r == 0:
            without += 1
            continue
        top = rel[:r]
        hits.append(int(np.argmax(rel)))
        ap.append(float((np.cumsum(top) / np.arange(1, r + 1) * top).sum() / r))
        rp.append(float(top.sum() / r))
    out: dict[str, float | int] = {f"recall@{k}": float(np.mean(np.asarray(hits) < k)) for k in ks}
    out["map@r"], out["r_precision"] = float(np.mean(ap)), float(np.mean(rp))
    out["queries_without_relevant"] = without
    return out


def neg_sq_dist(q: np.ndarray, g: np.ndarray) -> np.ndarray:
    return -((q[:, None, :].astype(np.float64) - g[None, :, :]) ** 2).sum(axis=2)


def assert_close(ours: dict, ref: dict) -> None:
    assert ours["queries_without_relevant"] == ref["queries_without_relevant"]
    for key in RANK_KEYS:
        assert ours[key] == pytest.approx(ref[key], abs=1e-12), key


# --- distance="euclidean" ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ties", [False, True])
def test_euclidean_agrees_with_pml_default_l2(dtype: type, ties: bool) -> None:
    x, y = blobs(30, 8, 16, seed=5, ties=ties)
    x = x.astype(dtype)
    ours = retrieval_metrics(x, y, distance="euclidean")
    theirs = pml(torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y))
    for key, pml_key in PML_KEYS.items():
        assert ours[key] == pytest.approx(theirs[pml_key], abs=1e-6), key
    # on raw vectors the two distances rank differently: the option is not a no-op
    assert retrieval_metrics(x, y)["map@r"] != ours["map@r"]


def test_euclidean_query_gallery_agrees_with_pml() -> None:
    x, y = blobs(25, 10, 12, seed=6, ties=True)
    q, ql, g, gl = x[:80], y[:80], x[80:], y[80:]
    ours = query_gallery_metrics(q, ql, g, gl, distance="euclidean")
    f32 = [torch.from_numpy(a.astype(np.float32)) for a in (q, g)]
    theirs = pml(f32[0], torch.from_numpy(ql), f32[1], torch.from_numpy(gl))
    for key, pml_key in PML_KEYS.items():
        assert ours[key] == pytest.approx(theirs[pml_key], abs=1e-6), key


def test_euclidean_ranks_by_radius_where_cosine_cannot() -> None:
    # Classes differ only in length along one direction: cosine sees one cluster.
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 25)
    x = (1.0 + 3.0 * y)[:, None] * np.ones((1, 8)) + 0.05 * rng.standard_normal((100, 8))
    euclid = retrieval_metrics(x, y, distance="euclidean")
    cosine = retrieval_metrics(x, y)
    assert euclid["recall@1"] == 1.0 and euclid["nmi"] == pytest.approx(1.0)
    assert cosine["recall@1"] < 0.6 and cosine["nmi"] < 0.3


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    labels=st.lists(st.integers(0, 4), min_size=2, max_size=25),
    seed=st.integers(0, 2**16),
)
def test_euclidean_matches_brute_force_with_ties(labels: list[int], seed: int) -> None:
    # Small integer coordinates: fp32 scores are exact, so ties (duplicates, equal distances
    # across classes) are exact in both and broken by the lower index in both.
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, size=(len(labels), 3)).astype(np.float32)
    y = np.asarray(labels)
    if not any(labels.count(v) > 1 for v in labels):
        return
    ours = retrieval_metrics(x, y, distance="euclidean", kmeans_niter=2)
    assert_close(ours, reference_metrics(neg_sq_dist(x, x), y, y, np.eye(len(y), dtype=bool)))


@pytest.mark.parametrize("exclude_self", [True, False])
def test_euclidean_backends_return_the_same_neighbours(exclude_self: bool) -> None:
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.standard_normal((4200, 16)).astype(np.float32))
    x *= torch.from_numpy(rng.uniform(0.5, 3.0, size=(4200, 1)).astype(np.float32))
    x[1::7] = x[::7][: x[1::7].shape[0]]  # exact duplicates: ties
    g = x if exclude_self else x[:4100]
    results = {
        b: knn(x, g, 12, exclude_self=exclude_self, backend=b, distance="euclidean")
        for b in ("exact", "tiled", "bf16", "tiled-bf16", "auto")
    }
    for b, (scores, idx) in results.items():
        assert torch.equal(idx, results["exact"][1]), b
        assert torch.equal(scores, results["exact"][0]), b
    # scores are -|q - g|^2 / 2, nearest first
    _, idx = results["exact"]
    want = -0.5 * ((x[:, None, :] - g[idx]) ** 2).sum(dim=2)
    assert torch.allclose(results["exact"][0], want, atol=1e-3)
    brute = torch.cdist(x.double(), g.double())
    if exclude_self:
        brute.fill_diagonal_(float("inf"))
    assert torch.equal(brute.gather(1, idx), brute.sort(dim=1).values[:, :12])


def test_a_plugged_in_search_gets_the_raw_embeddings_for_euclidean() -> None:
    x, y = blobs(6, 6, 4, seed=7, ties=False)
    seen: list[torch.Tensor] = []

    def brute(query: torch.Tensor, gallery: torch.Tensor, k: int, exclude_self: bool):
        seen.append(query)
        d = torch.cdist(query.double(), gallery.double())
        d.fill_diagonal_(float("inf"))
        return -d[:, :k], d.topk(k, dim=1, largest=False).indices

    ours = retrieval_metrics(x, y, distance="euclidean", knn=brute, kmeans_niter=2)
    assert torch.allclose(seen[0], torch.from_numpy(x).float())
    assert ours == retrieval_metrics(x, y, distance="euclidean", kmeans_niter=2)


# --- mask_to_ignore / ignore_groups --------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    labels=st.lists(st.integers(0, 3), min_size=3, max_size=24),
    groups=st.lists(st.integers(0, 5), min_size=24, max_size=24),
    seed=st.integers(0, 2**16),
)
def test_ignore_groups_and_mask_match_brute_force(
    labels: list[int], groups: list[int], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    n = len(labels)
    x = rng.integers(-2, 3, size=(n, 3)).astype(np.float32)
    y, grp = np.asarray(labels), np.asarray(groups[:n])
    ignore = grp[:, None] == grp[None, :]  # includes the diagonal: self
    if not ((y[:, None] == y[None, :]) & ~ignore).any():
        with pytest.raises(DaalmlError, match=r"alone in their class|no query has a relevant"):
            retrieval_metrics(x, y, distance="euclidean", ignore_groups=grp)
        return
    ref = reference_metrics(neg_sq_dist(x, x), y, y, ignore)
    by_groups = retrieval_metrics(x, y, distance="euclidean", ignore_groups=grp, kmeans_niter=2)
    assert_close(by_groups, ref)
    by_mask = retrieval_metrics(x, y, distance="euclidean", mask_to_ignore=ignore, kmeans_niter=2)
    assert by_mask == by_groups


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), density=st.floats(0.0, 0.9))
def test_query_gallery_mask_matches_brute_force_cosine(seed: int, density: float) -> None:
    rng = np.random.default_rng(seed)
    q, g = rng.standard_normal((15, 6)), rng.standard_normal((30, 6))  # no ties
    ql, gl = rng.integers(0, 4, 15), rng.integers(0, 4, 30)
    mask = rng.random((15, 30)) < density
    if not ((ql[:, None] == gl[None, :]) & ~mask).any():
        return
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    ours = query_gallery_metrics(q, ql, g, gl, mask_to_ignore=mask, kmeans_niter=2)
    assert_close(ours, reference_metrics(qn @ gn.T, ql, gl, mask))


def test_query_gallery_groups_equal_their_dense_mask() -> None:
    x, y = blobs(10, 12, 8, seed=2, ties=True)
    q, ql, g, gl = x[:40], y[:40], x[40:], y[40:]
    qg, gg = np.arange(40) % 9, np.arange(80) % 9
    by_groups = query_gallery_metrics(q, ql, g, gl, ignore_groups=(qg, gg))
    mask = qg[:, None] == gg[None, :]
    assert by_groups == query_gallery_metrics(q, ql, g, gl, mask_to_ignore=torch.from_numpy(mask))
    assert by_groups != query_gallery_metrics(q, ql, g, gl)


def test_a_query_whose_only_match_is_ignored_is_counted() -> None:
    x = np.asarray([[0.0, 1.0], [0.0, 1.1], [1.0, 0.0], [1.1, 0.0], [1.2, 0.1]])
    y = np.asarray([0, 0, 1, 1, 1])
    assert retrieval_metrics(x, y)["queries_without_relevant"] == 0
    out = retrieval_metrics(x, y, ignore_groups=[7, 7, 1, 2, 3])  # 0 and 1: one sequence
    assert out["queries_without_relevant"] == 2
    assert out["recall@1"] == 1.0  # the class-1 queries still find each other


def test_empty_mask_changes_nothing() -> None:
    x, y = blobs(8, 6, 5, seed=3, ties=False)
    assert retrieval_metrics(x, y, mask_to_ignore=np.zeros((48, 48), bool)) == retrieval_metrics(
        x, y
    )
    assert retrieval_metrics(x, y, ignore_groups=np.arange(48)) == retrieval_metrics(x, y)


# --- categories -----------------------------------------------------------------------------


def test_per_category_is_the_metrics_of_that_categorys_queries() -> None:
    x, y = blobs(12, 10, 8, seed=4, ties=True)
    q, ql, g, gl = x[:60], y[:60], x[60:], y[60:]
    cats = np.where(np.arange(60) % 3 == 0, "shoes", "shirts")
    out = query_gallery_metrics(q, ql, g, gl, categories=cats)
    plain = query_gallery_metrics(q, ql, g, gl)
    assert {k: v for k, v in out.items() if k != "per_category"} == plain  # overall: bit-identical
    assert set(out["per_category"]) == {"shoes", "shirts"}
    for name, entry in out["per_category"].items():
        alone = query_gallery_metrics(q[cats == name], ql[cats == name], g, gl)
        assert entry == {k: v for k, v in alone.items() if k != "nmi"}


def test_leave_one_out_per_category_matches_brute_force() -> None:
    x, y = blobs(10, 7, 6, seed=8, ties=False)
    y = np.concatenate([y, [100, 101]])  # two singletons, in category 1
    x = np.concatenate([x, 10 + np.eye(6)[:2]])
    cats = np.concatenate([y[:-2] % 2, [1, 1]])
    out = retrieval_metrics(x, y, categories=cats)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    for c in (0, 1):
        ref = reference_metrics(xn @ xn.T, y, y, np.eye(len(y), dtype=bool), rows=cats == c)
        assert_close(out["per_category"][str(c)], ref)
    assert out["per_category"]["1"]["queries_without_relevant"] == 2
    assert out["queries_without_relevant"] == 2


def test_a_category_without_any_relevant_item_has_only_its_count() -> None:
    x = np.asarray([[0.0, 1.0], [0.0, 1.1], [1.0, 0.0]])
    out = retrieval_metrics(x, [0, 0, 1], categories=[5, 5, 9])
    assert out["per_category"]["9"] == {"queries_without_relevant": 1}
    assert out["per_category"]["5"]["recall@1"] == 1.0


def test_results_with_categories_go_to_json_and_the_cli_table() -> None:
    x, y = blobs(6, 5, 4, seed=9, ties=False)
    out = retrieval_metrics(x, y, categories=y % 2)
    assert json.loads(json.dumps(out)) == out
    table = metrics_table({"trained": out})
    assert [c.header for c in table.columns] == ["model", *RANK_KEYS, "nmi"]


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"distance": "manhattan"}, "distance: 'manhattan' is not one of cosine, euclidean"),
        ({"mask_to_ignore": np.zeros((4, 4), bool)}, r"shape \(4, 4\) is not"),
        ({"mask_to_ignore": np.zeros((6, 6), int)}, "is not bool"),
        ({"ignore_groups": [0, 1]}, "ignore_groups: 2 values for 6 samples"),
        ({"ignore_groups": np.zeros(6, float)}, "is not integers or strings"),
        ({"categories": [[0]] * 6}, r"categories: shape \(6, 1\) is not 1-D"),
        (
            {"mask_to_ignore": np.zeros((6, 6), bool), "ignore_groups": np.arange(6)},
            "give at most one",
        ),
        ({"ignore_groups": [0, 0, 1, 1, 2, 2]}, "no query has a relevant item left"),
    ],
)
def test_option_errors(kwargs: dict, match: str) -> None:
    x = np.random.default_rng(0).standard_normal((6, 3))
    with pytest.raises(DaalmlError, match=match):
        retrieval_metrics(x, [0, 0, 1, 1, 2, 2], **kwargs)


def test_query_gallery_ignore_groups_must_be_a_pair() -> None:
    x = np.random.default_rng(0).standard_normal((6, 3))
    with pytest.raises(DaalmlError, match="expected a pair"):
        query_gallery_metrics(x, [0, 1, 0, 1, 0, 1], x, [0, 1, 0, 1, 0, 1], ignore_groups=[0] * 6)
    with pytest.raises(DaalmlError, match="mix strings and integers"):
        query_gallery_metrics(
            x, [0, 1, 0, 1, 0, 1], x, [0, 1, 0, 1, 0, 1], ignore_groups=([0] * 6, ["a"] * 6)
        )


def test_the_docs_example_prints_what_the_page_says() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    section = page[page.index("## One example") :]
    code, printed = re.findall(r"```(?:python|text)\n(.*?)```", section, flags=re.S)[:2]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "docs/metrics.md", "exec"), {})
    assert out.getvalue() == printed
