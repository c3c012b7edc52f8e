"""Tests for daalml.metrics: hand-computed cases, PML agreement, edge cases and errors."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

from daalml.errors import DaalmlError
from daalml.metrics import (
    count_unmatchable_queries,
    knn,
    query_gallery_metrics,
    retrieval_metrics,
)

RANK_KEYS = ("recall@1", "recall@2", "recall@4", "recall@8", "map@r", "r_precision")


def on_arc(degrees: list[float]) -> np.ndarray:
    """Unit 2-D vectors at the given angles: within 0-90 degrees, cosine order = angle order."""
    rad = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(rad), np.sin(rad)], axis=1).astype(np.float32)


def clustered(
    n_classes: int, per_class: list[int] | int, d: int, noise: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs around random centres, L2-normalised (so PML's L2 kNN = cosine kNN)."""
    rng = np.random.default_rng(seed)
    sizes = [per_class] * n_classes if isinstance(per_class, int) else per_class
    labels = np.repeat(np.arange(n_classes), sizes)
    centres = rng.standard_normal((n_classes, d))
    x = centres[labels] + noise * rng.standard_normal((labels.shape[0], d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    perm = rng.permutation(labels.shape[0])
    return x[perm].astype(np.float32), labels[perm]


def pml_accuracy(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    calc = AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r", "NMI"),
        k="max_bin_count",
        device=torch.device("cpu"),
    )
    return calc.get_accuracy(x, y)


# --- hand-computed cases ---------------------------------------------------------------

# Angles 0 5 12 20 30 42 65, labels A A B A B B C (C is a singleton, excluded as a query).
# Neighbour labels by query (self excluded), R = 2 for every A and B query:
#   q0 (0):  A B A B B C   first hit 1, top-2 A B -> RP 1/2, AP@R (1)/2       = 1/2
#   q1 (5):  A B A B B C   first hit 1, RP 1/2, AP@R 1/2
#   q2 (12): A A A B B C   first hit 4, RP 0,   AP@R 0
#   q3 (20): B B A A B C   first hit 3, RP 0,   AP@R 0
#   q4 (30): A B B A A C   first hit 2, RP 1/2, AP@R (1/2)/2 = 1/4
#   q5 (42): B A C B A A   first hit 1, RP 1/2, AP@R (1)/2   = 1/2
LOO_ANGLES = [0, 5, 12, 20, 30, 42, 65]
LOO_LABELS = [0, 0, 1, 0, 1, 1, 2]
LOO_EXPECTED = {
    "recall@1": 3 / 6,
    "recall@2": 4 / 6,
    "recall@4": 6 / 6,
    "recall@8": 6 / 6,
    "r_precision": 2 / 6,
    "map@r": (0.5 + 0.5 + 0 + 0 + 0.25 + 0.5) / 6,
}


def test_leave_one_out_hand_computed() -> None:
    out = retrieval_metrics(on_arc(LOO_ANGLES), np.asarray(LOO_LABELS))
    assert set(out) == {*RANK_KEYS, "nmi", "queries_without_relevant"}
    assert out["queries_without_relevant"] == 1  # the singleton C
    for key, expected in LOO_EXPECTED.items():
        assert out[key] == pytest.approx(expected, abs=1e-12), key
    assert 0.0 <= out["nmi"] <= 1.0


def test_recall_at_3_hand_computed() -> None:
    # First hits 1 1 4 3 2 1 -> 5 of 6 queries hit within 3.
    out = retrieval_metrics(on_arc(LOO_ANGLES), np.asarray(LOO_LABELS), ks=(3,))
    assert [k for k in out if k.startswith("recall@")] == ["recall@3"]
    assert out["recall@3"] == pytest.approx(5 / 6)


# Gallery angles 0 10 20 30 40 with labels X Y X X Y (X: R = 3, Y: R = 2).
#   query 1 (X):  X Y X X Y -> first hit 1, RP 2/3, AP@R (1 + 2/3)/3 = 5/9
#   query 24 (Y): X X Y Y X -> first hit 3, RP 0,   AP@R 0
#   query 50 (Z): no Z in the gallery -> excluded
#   query 33 (X): X Y X Y X -> first hit 1, RP 2/3, AP@R 5/9
def test_query_gallery_hand_computed() -> None:
    out = query_gallery_metrics(
        on_arc([1, 24, 50, 33]),
        np.asarray([0, 1, 2, 0]),
        on_arc([0, 10, 20, 30, 40]),
        np.asarray([0, 1, 0, 0, 1]),
    )
    assert set(out) == {*RANK_KEYS, "nmi", "queries_without_relevant"}
    assert out["queries_without_relevant"] == 1  # the Z query
    assert out["recall@1"] == pytest.approx(2 / 3)
    assert out["recall@2"] == pytest.approx(2 / 3)
    assert out["recall@4"] == pytest.approx(1.0)
    assert out["recall@8"] == pytest.approx(1.0)
    assert out["r_precision"] == pytest.approx(4 / 9)
    assert out["map@r"] == pytest.approx(10 / 27)
    assert 0.0 <= out["nmi"] <= 1.0


def test_query_gallery_does_not_exclude_self() -> None:
    # The same set as query and gallery: each query finds itself first.
    x, y = clustered(5, 4, 8, 1.0, seed=3)
    out = query_gallery_metrics(x, y, x, y)
    assert out["recall@1"] == 1.0
    # With itself counted, R = class size (4); the rest follows the leave-one-out ranking.
    assert out["map@r"] >= retrieval_metrics(x, y)["map@r"]


# --- agreement with pytorch-metric-learning --------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_agrees_with_pml_accuracy_calculator(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    sizes = [int(s) for s in rng.integers(1, 25, size=40)]  # some singleton classes
    x, y = clustered(40, sizes, 24, 1.3, seed=seed)
    assert count_unmatchable_queries(y) > 0
    ours = retrieval_metrics(x, y)
    pml = pml_accuracy(x, y)
    assert ours["recall@1"] == pytest.approx(pml["precision_at_1"], abs=1e-6)
    assert ours["r_precision"] == pytest.approx(pml["r_precision"], abs=1e-6)
    assert ours["map@r"] == pytest.approx(pml["mean_average_precision_at_r"], abs=1e-6)
    # Both run k-means, with different seeds and iteration counts: close, not identical.
    assert ours["nmi"] == pytest.approx(pml["NMI"], abs=0.05)


def test_nmi_matches_pml_on_separated_clusters() -> None:
    x, y = clustered(4, 20, 32, 0.05, seed=2)
    ours = retrieval_metrics(x, y)
    assert ours["nmi"] == pytest.approx(1.0, abs=1e-9)
    assert pml_accuracy(x, y)["NMI"] == pytest.approx(1.0, abs=1e-9)
    assert ours["recall@1"] == ours["map@r"] == ours["r_precision"] == 1.0


def test_nmi_kmeans_pp_finds_separated_clusters() -> None:
    # Random seeding (PML's) merges two of 20 perfectly separated classes for almost every
    # seed; k-means++ seeding finds all of them for most seeds and never misses by much.
    x, y = clustered(20, 15, 32, 0.05, seed=3)
    nmis = [retrieval_metrics(x, y, ks=(1,), seed=s)["nmi"] for s in range(10)]
    assert sum(v == pytest.approx(1.0, abs=1e-9) for v in nmis) >= 8
    assert min(nmis) > 0.95


def test_nmi_low_for_random_labels() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    y = rng.integers(0, 10, size=300)
    assert retrieval_metrics(x, y)["nmi"] < 0.2


# --- singletons, ties, duplicates ------------------------------------------------------


def test_singleton_classes_excluded_as_queries() -> None:
    x, y = clustered(6, 8, 3, 0.3, seed=11)
    x = np.abs(x)  # all in the positive orthant ...
    far = -np.eye(3, dtype=np.float32)  # ... so these singletons rank last for everyone
    x_more = np.concatenate([x, far])
    y_more = np.concatenate([y, [100, 101, 102]])
    base = retrieval_metrics(x, y)
    more = retrieval_metrics(x_more, y_more)
    for key in RANK_KEYS:
        assert more[key] == pytest.approx(base[key], abs=1e-12), key
    assert count_unmatchable_queries(y_more) == 3
    assert count_unmatchable_queries(y) == 0


def test_count_unmatchable_queries() -> None:
    assert count_unmatchable_queries([3, 3, 7, 8, 8, 8, 9]) == 2
    assert count_unmatchable_queries(torch.tensor([1])) == 1
    assert count_unmatchable_queries(np.array([2, 2], dtype=np.int32)) == 0


def test_duplicates_are_neighbours_not_self() -> None:
    # Each sample has an exact duplicate of its class: self is excluded by index, so the
    # duplicate (similarity exactly 1) must be the nearest neighbour.
    base = on_arc([0, 30, 60])
    x = np.repeat(base, 2, axis=0)
    y = np.asarray([0, 0, 1, 1, 2, 2])
    out = retrieval_metrics(x, y, kmeans_niter=5)  # zero k-means objective: no early stop
    assert out["recall@1"] == out["map@r"] == out["r_precision"] == 1.0
    _, idx = knn(x, x, 1, exclude_self=True)
    assert idx.ravel().tolist() == [1, 0, 3, 2, 5, 4]


def test_ties_ordered_by_gallery_index_and_self_never_returned() -> None:
    v = on_arc([0, 0, 0, 50])
    scores, idx = knn(v, v, 3, exclude_self=True)
    assert idx.tolist() == [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]]
    assert scores[0, 0].item() == pytest.approx(1.0)
    # Labels 0 1 0 1, nearest by the index rule: q0 -> 1 (miss), q1 -> 0 (miss),
    # q2 -> 0 (hit), q3 -> 0 (miss).
    out = retrieval_metrics(v, np.asarray([0, 1, 0, 1]), ks=(1,), kmeans_niter=5)
    assert out["recall@1"] == pytest.approx(1 / 4)


def test_zero_vector_embedding_is_allowed() -> None:
    x = np.concatenate([on_arc([0, 10, 40, 50]), np.zeros((1, 2), np.float32)])
    out = retrieval_metrics(x, np.asarray([0, 0, 1, 1, 2]))
    assert out["recall@1"] == 1.0


def test_single_class() -> None:
    x, _ = clustered(1, 10, 4, 1.0, seed=2)
    out = retrieval_metrics(x, np.zeros(10, dtype=np.int64))
    assert out["recall@1"] == out["map@r"] == out["r_precision"] == 1.0
    assert out["nmi"] == pytest.approx(1.0)


def test_large_k_is_clamped_to_available_neighbours() -> None:
    out = retrieval_metrics(on_arc(LOO_ANGLES), np.asarray(LOO_LABELS), ks=(1, 50))
    assert out["recall@50"] == 1.0


# --- knn helper ------------------------------------------------------------------------


@pytest.mark.parametrize("exclude_self", [True, False])
def test_knn_matches_brute_force(exclude_self: bool) -> None:
    rng = np.random.default_rng(4)
    q = rng.standard_normal((37, 9))
    g = q if exclude_self else rng.standard_normal((53, 9))
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    sim = qn @ gn.T
    if exclude_self:
        np.fill_diagonal(sim, -np.inf)
    expected = np.argsort(-sim, axis=1, kind="stable")[:, :6]
    scores, idx = knn(q, g, 6, exclude_self=exclude_self, chunk_size=5)
    assert idx.dtype == torch.int64 and scores.dtype == torch.float32
    assert idx.numpy().tolist() == expected.tolist()
    np.testing.assert_allclose(
        scores.numpy(), np.take_along_axis(sim, expected, 1), rtol=0, atol=1e-5
    )


def test_knn_clamps_k() -> None:
    x = on_arc([0, 10, 20])
    assert knn(x, x, 10, exclude_self=True)[1].shape == (3, 2)
    assert knn(x, x, 10, exclude_self=False)[1].shape == (3, 3)


def test_knn_errors() -> None:
    x = on_arc([0, 10, 20])
    with pytest.raises(DaalmlError, match="exclude_self"):
        knn(x, x[:2], 1, exclude_self=True)
    with pytest.raises(DaalmlError, match="k: 0"):
        knn(x, x, 0, exclude_self=False)
    with pytest.raises(DaalmlError, match="dimension"):
        knn(x, np.ones((3, 5), np.float32), 1, exclude_self=False)
    with pytest.raises(DaalmlError, match="chunk_size"):
        knn(x, x, 1, exclude_self=False, chunk_size=0)
    with pytest.raises(DaalmlError, match="no neighbours"):
        knn(x[:1], x[:1], 1, exclude_self=True)


# --- inputs, determinism ---------------------------------------------------------------


def test_numpy_torch_and_list_inputs_agree() -> None:
    x, y = clustered(8, 6, 10, 1.0, seed=9)
    ref = retrieval_metrics(x, y)
    assert retrieval_metrics(torch.from_numpy(x), torch.from_numpy(y)) == ref
    assert retrieval_metrics(x.astype(np.float64), y.astype(np.int32)) == ref
    assert retrieval_metrics(x.tolist(), y.tolist()) == ref
    grad = torch.from_numpy(x).requires_grad_(True)
    assert retrieval_metrics(grad, torch.from_numpy(y)) == ref


def test_deterministic_and_chunk_size_independent() -> None:
    x, y = clustered(10, [3, 9, 1, 5, 7, 2, 8, 4, 6, 5], 12, 1.1, seed=21)
    first = retrieval_metrics(x, y, seed=3)
    assert retrieval_metrics(x, y, seed=3) == first
    assert retrieval_metrics(x, y, seed=3, chunk_size=7) == first
    assert retrieval_metrics(x, y, seed=3, chunk_size=1) == first
    assert first.pop("queries_without_relevant") == 1
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in first.values())


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    labels=st.lists(st.integers(0, 4), min_size=2, max_size=30).filter(
        lambda ls: any(ls.count(v) > 1 for v in ls)
    ),
    seed=st.integers(0, 2**16),
    ks=st.lists(st.integers(1, 12), min_size=1, max_size=4),
)
def test_invariants(labels: list[int], seed: int, ks: list[int]) -> None:
    # Coarse integer coordinates produce plenty of exact ties and duplicates.
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, size=(len(labels), 3)).astype(np.float32)
    n = len(labels)
    out = retrieval_metrics(x, np.asarray(labels), ks=[*ks, n], kmeans_niter=10)
    assert out.pop("queries_without_relevant") == count_unmatchable_queries(labels)
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in out.values())
    recalls = [out[f"recall@{k}"] for k in sorted({*ks, n})]
    assert recalls == sorted(recalls)
    # Every matchable query has a same-class sample among all n - 1 others.
    assert out[f"recall@{n}"] == 1.0
    # AP@R sums at most R precisions, each <= 1, over the hits in the top R: <= R-precision.
    assert out["map@r"] <= out["r_precision"] + 1e-12


MEMORY_SCRIPT = """
import resource, numpy as np, torch
from daalml.metrics import retrieval_metrics
torch.manual_seed(0)
y = torch.arange(20000) % 400
x = torch.randn(400, 64)[y] + torch.randn(20000, 64)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = retrieval_metrics(x, y, ks=(1,), kmeans_niter=2)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) // 1024, out["recall@1"])
"""


def test_no_n_by_n_matrix_is_built() -> None:
    # 20000 x 20000 float32 similarities would take 1600 MB; 1024-row chunks take 80 MB.
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT], capture_output=True, text=True, check=True
    )
    extra_mb, recall = result.stdout.split()
    assert int(extra_mb) < 600
    assert 0.0 < float(recall) <= 1.0


# --- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("embeddings", "labels", "match"),
    [
        (np.ones(4, np.float32), [0, 0, 1, 1], r"embeddings: shape \(4,\) is not 2-D"),
        (np.ones((0, 3), np.float32), [], "embeddings: shape .* is empty"),
        (np.ones((4, 2), np.float32), [0, 0, 1], "labels: 3 labels for 4 embeddings"),
        (np.ones((4, 2), np.float32), [0.0, 0.0, 1.0, 1.0], "labels: dtype .* not an integer"),
        (np.ones((4, 2), np.float32), [[0, 0, 1, 1]], r"labels: shape \(1, 4\) is not 1-D"),
        (np.full((4, 2), np.nan, np.float32), [0, 0, 1, 1], "embeddings: contains NaN"),
        (np.array([[0, 1], [1, 0], [np.nan, 1], [1, 1]], np.float32), [0, 0, 1, 1], "NaN"),
        (np.array([[0, 1], [1, 0], [np.inf, 1], [1, 1]], np.float32), [0, 0, 1, 1], "infinite"),
        (np.array([[0, 1], [1, -np.inf], [0, 1], [1, 1]], np.float32), [0, 0, 1, 1], "infinite"),
        (np.ones((3, 2), np.float32), [0, 1, 2], "labels: all 3 samples are alone"),
    ],
)
def test_retrieval_metrics_errors(embeddings: np.ndarray, labels: list, match: str) -> None:
    with pytest.raises(DaalmlError, match=match):
        retrieval_metrics(embeddings, labels)


@pytest.mark.parametrize(("ks", "match"), [((), "ks: empty"), ((1, 0), "ks: 0"), ((1.5,), "1.5")])
def test_bad_ks(ks: tuple, match: str) -> None:
    with pytest.raises(DaalmlError, match=match):
        retrieval_metrics(on_arc([0, 1, 2]), [0, 0, 1], ks=ks)


def test_query_gallery_errors() -> None:
    q, g = on_arc([0, 10]), on_arc([0, 10, 20])
    with pytest.raises(DaalmlError, match="query_labels: no query's class occurs"):
        query_gallery_metrics(q, [5, 6], g, [0, 1, 2])
    with pytest.raises(DaalmlError, match="gallery_labels: 2 labels for 3 embeddings"):
        query_gallery_metrics(q, [0, 1], g, [0, 1])
    with pytest.raises(DaalmlError, match="dimension 2 differs"):
        query_gallery_metrics(q, [0, 1], np.ones((3, 4), np.float32), [0, 1, 2])


def test_bad_seed_and_niter() -> None:
    x, y = on_arc([0, 1, 2]), [0, 0, 1]
    with pytest.raises(DaalmlError, match="seed"):
        retrieval_metrics(x, y, seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(DaalmlError, match="kmeans_niter"):
        retrieval_metrics(x, y, kmeans_niter=0)
    assert math.isfinite(retrieval_metrics(x, y, kmeans_niter=1)["nmi"])


# --- a plugged-in neighbour search ---------------------------------------------------------


def faiss_knn(
    query: torch.Tensor, gallery: torch.Tensor, k: int, exclude_self: bool
) -> tuple[np.ndarray, np.ndarray]:
    """A KnnFunc on faiss's flat inner-product index: one extra neighbour, self removed."""
    import faiss

    index = faiss.IndexFlatIP(gallery.shape[1])
    index.add(gallery.cpu().numpy())
    scores, idx = index.search(query.cpu().numpy(), k + int(exclude_self))
    if not exclude_self:
        return scores, idx
    keep = idx != np.arange(len(idx))[:, None]
    keep[keep.sum(1) > k, -1] = False  # self not among them: drop the last instead
    return scores[keep].reshape(-1, k), idx[keep].reshape(-1, k)


def test_knn_callable_with_faiss_gives_the_same_metrics() -> None:
    x, y = clustered(30, 12, 16, 1.2, seed=4)
    calls: list[tuple[int, int, int, bool]] = []

    def spy(q, g, k, exclude_self):
        calls.append((q.shape[0], g.shape[0], k, exclude_self))
        assert q.dtype == g.dtype == torch.float32
        torch.testing.assert_close(q.norm(dim=1), torch.ones(len(q)))
        return faiss_knn(q, g, k, exclude_self)

    ours = retrieval_metrics(x, y, seed=1)
    plugged = retrieval_metrics(x, y, seed=1, knn=spy)
    assert calls == [(360, 360, 11, True)]  # k: the largest class minus the query
    for key in ours:
        assert plugged[key] == pytest.approx(ours[key], abs=1e-12), key
    qg = query_gallery_metrics(x[:100], y[:100], x[100:], y[100:], knn=spy)
    assert calls[-1] == (100, 260, int(np.bincount(y[100:]).max()), False)
    assert qg == pytest.approx(query_gallery_metrics(x[:100], y[:100], x[100:], y[100:]))


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (lambda q, g, k, s: None, "must return a pair"),
        (lambda q, g, k, s: (None, np.zeros((len(q), k - 1), np.int64)), r"shape \(6, 4\)"),
        (lambda q, g, k, s: (None, np.zeros((len(q), k), np.float32)), "dtype"),
        (lambda q, g, k, s: (None, np.full((len(q), k), len(g))), "outside the gallery"),
        (lambda q, g, k, s: (None, np.tile(np.arange(len(q))[:, None], (1, k))), "own neigh"),
    ],
)
def test_knn_callable_contract_is_checked(bad, match: str) -> None:
    with pytest.raises(DaalmlError, match=match):
        retrieval_metrics(on_arc([0, 5, 10, 20, 25, 30]), [0, 0, 0, 1, 1, 1], knn=bad)
    with pytest.raises(DaalmlError, match="knn: 3 is not callable"):
        retrieval_metrics(on_arc([0, 5, 10]), [0, 0, 1], knn=3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("n", "clusters", "expected"),
    [
        (20_000, 400, 4_000),  # 10 a cluster: 10,000 points x 400 cost 0.18 s
        (60_000, 1_200, 12_000),
        (5_924, 100, 5_924),  # CUB's test split: every point, as before
        (9_000, 175, 5_714),  # many clusters: the budget's 1,000,000 // 175
        (30_000, 50, 10_000),  # few clusters: KMEANS_SEED_MIN_POINTS
    ],
)
def test_seeding_sample_size(n: int, clusters: int, expected: int) -> None:
    """The seeding's sample: 10 points a cluster, and more where its cost stays small."""
    import daalml.evaluation.clustering as C

    assert C._seed_sample(torch.zeros(n, 2), clusters, 0)[0].shape == (expected, 2)


def test_nmi_seeding_runs_beside_the_search_with_the_same_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """retrieval_metrics starts k-means++ seeding in a thread of its own before searching;
    NMI is the same as when everything runs in turn."""
    import threading

    import daalml.evaluation.clustering as C

    gen = torch.Generator().manual_seed(3)
    centres = torch.randn(12, 32, generator=gen)
    labels = torch.arange(12).repeat_interleave(40)
    x = torch.nn.functional.normalize(centres[labels] + 0.3 * torch.randn(480, 32, generator=gen))
    threads: list[str] = []
    original = C._seeds_of

    def spy(sample, *args, **kwargs):
        assert isinstance(sample, np.ndarray)  # a host copy: no tensor is read in the thread
        threads.append(threading.current_thread().name)
        return original(sample, *args, **kwargs)

    monkeypatch.setattr(C, "_seeds_of", spy)
    both = retrieval_metrics(x, labels)["nmi"], query_gallery_metrics(x, labels, x, labels)["nmi"]
    assert all(name.startswith("daalml-kmeans-seeding") for name in threads) and len(threads) == 2
    assert both[0] == C._nmi(x, labels, 0, C.DEFAULT_KMEANS_NITER)
    assert both[1] == C._nmi(torch.cat([x, x]), torch.cat([labels, labels]), 0, 20)
