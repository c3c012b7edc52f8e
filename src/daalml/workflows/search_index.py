"""A faiss index of embedded image files: build, save, load and search it (and .npz embeddings).

Usable without the CLI::

    module, _ = load_module("runs/x/checkpoints/best.ckpt")
    images = list_images("gallery/")                      # folder or list file
    index = build_index(embed_images(module, images.paths), images.paths,
                        labels=images.labels, class_names=images.class_names,
                        checkpoint="runs/x/checkpoints/best.ckpt")
    index.save("gallery.index")
    hits = RetrievalIndex.load("gallery.index").search(["query.jpg"], k=8)

Every kind saves a faiss index file (``index.faiss``) that other tools can read directly.
Exact (``flat``) indexes are *searched* with :func:`daalml.metrics.knn` (exact chunked search,
fp32 or a certified bf16 candidate pass, whichever this machine runs faster; see
docs/performance.md), which gives the same neighbours as faiss's flat search; ``ivf`` and ``hnsw`` (approximate, for large galleries) are searched by faiss. Scores are cosine
similarities of the L2-normalised embeddings.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import torch
import torch.nn.functional as F

from daalml.data.listing import ImageList, list_images
from daalml.engine.checkpoint import load_module
from daalml.engine.inference import ImageInput, embed_images
from daalml.engine.module import EmbeddingModule
from daalml.errors import DaalmlError
from daalml.evaluation.search import knn

INDEX_KINDS = ("flat", "ivf", "hnsw")
INDEX_FILE = "index.faiss"
META_FILE = "index.json"
INDEX_FORMAT = 1


# ---------------------------------------------------------------------------- index
@dataclass
class SearchHit:
    """One result: the gallery item's path, cosine similarity, position and class if known."""

    path: str
    score: float
    index: int
    label: int | None = None
    class_name: str | None = None


@dataclass
class _Params:
    kind: str = "flat"
    nlist: int = 1
    nprobe: int = 1
    hnsw_m: int = 32
    ef_search: int = 64


def _as_matrix(embeddings: torch.Tensor | np.ndarray, what: str) -> np.ndarray:
    tensor = torch.as_tensor(
        np.asarray(embeddings) if not torch.is_tensor(embeddings) else embeddings
    )
    if tensor.ndim != 2 or tensor.shape[0] == 0 or tensor.shape[1] == 0:
        raise DaalmlError(f"{what}: expected a non-empty (N, d) matrix, got {tuple(tensor.shape)}")
    tensor = tensor.detach().float().cpu()
    if not bool(torch.isfinite(tensor).all()):
        raise DaalmlError(f"{what}: contains NaN or infinite values")
    return np.ascontiguousarray(F.normalize(tensor, dim=1).numpy(), dtype=np.float32)


def _faiss_index(vectors: np.ndarray, params: _Params) -> faiss.Index:
    dim = vectors.shape[1]
    if params.kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif params.kind == "ivf":
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, params.nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.nprobe = params.nprobe
    else:
        index = faiss.IndexHNSWFlat(dim, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = params.ef_search
    index.add(vectors)
    return index


class RetrievalIndex:
    """A gallery of embeddings with its paths (labels, checkpoint) that answers k-NN queries."""

    def __init__(
        self,
        index: faiss.Index,
        paths: Sequence[str | Path],
        *,
        params: _Params,
        labels: Sequence[int] | None = None,
        class_names: Sequence[str] | None = None,
        checkpoint: str | Path | None = None,
    ) -> None:
        if index.ntotal != len(paths):
            raise DaalmlError(f"index holds {index.ntotal} vectors for {len(paths)} paths")
        if labels is not None and len(labels) != len(paths):
            raise DaalmlError(f"index: {len(labels)} labels for {len(paths)} paths")
        self.index = index
        self.paths = [str(p) for p in paths]
        self.labels = None if labels is None else [int(v) for v in labels]
        self.class_names = None if class_names is None else [str(n) for n in class_names]
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        self.params = params
        self._vectors: torch.Tensor | None = None
        self._module: EmbeddingModule | None = None

    @property
    def kind(self) -> str:
        """``flat`` (exact), ``ivf`` or ``hnsw`` (approximate)."""
        return self.params.kind

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self.index.d)

    def __len__(self) -> int:
        return len(self.paths)

    # ------------------------------------------------------------------ search
    def _flat_vectors(self) -> torch.Tensor:
        if self._vectors is None:
            # torch.as_tensor: once faiss.contrib.torch_utils is imported (PML does) faiss
            # returns torch tensors instead of numpy arrays
            self._vectors = torch.as_tensor(self.index.reconstruct_n(0, self.index.ntotal))
        return self._vectors

    def search_embeddings(
        self, queries: torch.Tensor | np.ndarray, k: int = 8
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores and gallery indices (n_query, k'), best first; k' = min(k, len); -1 pads
        approximate searches that found fewer than k' items."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise DaalmlError(f"k must be a positive integer, got {k!r}")
        vectors = _as_matrix(queries, "query embeddings")
        if vectors.shape[1] != self.dim:
            raise DaalmlError(
                f"query embeddings have dimension {vectors.shape[1]}; the index has {self.dim}"
            )
        k = min(k, len(self))
        if self.kind == "flat":
            scores, indices = knn(
                torch.from_numpy(vectors), self._flat_vectors(), k, exclude_self=False
            )
            return scores.numpy(), indices.numpy()
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = max(self.params.ef_search, k)
        scores, indices = self.index.search(vectors, k)
        return np.asarray(scores), np.asarray(indices)

    def embedder(self) -> EmbeddingModule:
        """The model of the index's checkpoint (loaded once), to embed query images."""
        if self._module is None:
            if self.checkpoint is None:
                raise DaalmlError(
                    "this index records no checkpoint: pass query embeddings or a module"
                )
            if not Path(self.checkpoint).is_file():
                raise DaalmlError(
                    f"checkpoint {self.checkpoint} of this index no longer exists; "
                    "pass the model with --checkpoint"
                )
            self._module, _ = load_module(self.checkpoint)
        return self._module

    def search(
        self,
        queries: torch.Tensor | np.ndarray | Sequence[ImageInput],
        k: int = 8,
        *,
        module: EmbeddingModule | None = None,
        batch_size: int = 64,
        device: str | torch.device | None = None,
    ) -> list[list[SearchHit]]:
        """The top-k gallery items of each query, best first.

        ``queries`` are embeddings (N, d) or images (paths or PIL images), which are embedded
        with ``module`` or else the index's checkpoint (on ``device``, default CUDA if any).
        """
        if isinstance(queries, torch.Tensor | np.ndarray):
            vectors = queries
        else:
            model = module if module is not None else self.embedder()
            vectors = embed_images(model, list(queries), batch_size=batch_size, device=device)
        scores, indices = self.search_embeddings(vectors, k)
        return [
            [self._hit(int(i), float(s)) for s, i in zip(row_s, row_i, strict=True) if i >= 0]
            for row_s, row_i in zip(scores, indices, strict=True)
        ]

    def _hit(self, index: int, score: float) -> SearchHit:
        label = None if self.labels is None else self.labels[index]
        name = None
        if label is not None and self.class_names is not None and label < len(self.class_names):
            name = self.class_names[label]
        return SearchHit(self.paths[index], score, index, label, name)

    # ------------------------------------------------------------------ files
    def save(self, directory: str | Path) -> Path:
        """Write ``index.faiss`` (the faiss index) and ``index.json`` (paths, labels, settings)."""
        out = Path(directory)
        if out.exists() and not out.is_dir():
            raise DaalmlError(f"index directory {out}: exists and is not a directory")
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / f".{INDEX_FILE}.tmp-{os.getpid()}"
        faiss.write_index(self.index, str(tmp))
        os.replace(tmp, out / INDEX_FILE)
        meta = {
            "format": INDEX_FORMAT,
            "kind": self.kind,
            "dim": self.dim,
            "count": len(self),
            "metric": "cosine (inner product of L2-normalised embeddings)",
            "checkpoint": self.checkpoint,
            "nlist": self.params.nlist,
            "nprobe": self.params.nprobe,
            "hnsw_m": self.params.hnsw_m,
            "ef_search": self.params.ef_search,
            "paths": self.paths,
            "labels": self.labels,
            "class_names": self.class_names,
        }
        tmp_meta = out / f".{META_FILE}.tmp-{os.getpid()}"
        tmp_meta.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp_meta, out / META_FILE)
        return out

    @classmethod
    def load(cls, directory: str | Path) -> RetrievalIndex:
        """Read an index directory written by :meth:`save` (or ``daalml index``)."""
        root = Path(directory)
        meta_path, index_path = root / META_FILE, root / INDEX_FILE
        for path in (meta_path, index_path):
            if not path.is_file():
                raise DaalmlError(f"index {root}: missing {path.name} (not a daalml index)")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DaalmlError(f"index {root}: {META_FILE} is not readable JSON ({err})") from err
        if not isinstance(meta, dict) or meta.get("format") != INDEX_FORMAT:
            raise DaalmlError(
                f"index {root}: {META_FILE} has format {meta.get('format') if isinstance(meta, dict) else None!r}, "
                f"expected {INDEX_FORMAT}"
            )
        try:
            index = faiss.read_index(str(index_path))
        except RuntimeError as err:
            raise DaalmlError(f"index {root}: {INDEX_FILE} is not a faiss index ({err})") from err
        if meta.get("kind") not in INDEX_KINDS or index.ntotal != meta.get("count"):
            raise DaalmlError(
                f"index {root}: {INDEX_FILE} holds {index.ntotal} vectors but {META_FILE} "
                f"describes {meta.get('count')} of kind {meta.get('kind')!r}"
            )
        params = _Params(
            kind=meta["kind"],
            nlist=int(meta.get("nlist", 1)),
            nprobe=int(meta.get("nprobe", 1)),
            hnsw_m=int(meta.get("hnsw_m", 32)),
            ef_search=int(meta.get("ef_search", 64)),
        )
        if params.kind == "ivf":
            faiss.extract_index_ivf(index).nprobe = params.nprobe
        return cls(
            index,
            meta["paths"],
            params=params,
            labels=meta.get("labels"),
            class_names=meta.get("class_names"),
            checkpoint=meta.get("checkpoint"),
        )


def _default_nlist(count: int) -> int:
    """About sqrt(N) lists, but at least 39 training points per list (faiss's minimum)."""
    return max(1, min(round(count**0.5), count // 39))


def build_index(
    embeddings: torch.Tensor | np.ndarray,
    paths: Sequence[str | Path],
    *,
    kind: str = "flat",
    labels: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    checkpoint: str | Path | None = None,
    nlist: int | None = None,
    nprobe: int | None = None,
    hnsw_m: int = 32,
    ef_search: int = 64,
) -> RetrievalIndex:
    """Index ``embeddings`` (N, d) of the items ``paths`` (stored as given; L2-normalised here).

    ``kind``: ``flat`` exact inner product (default); ``ivf`` (``nlist`` lists, default about
    sqrt(N); ``nprobe`` searched, default min(nlist, 16)) or ``hnsw`` (``hnsw_m`` links per
    node, ``ef_search``) for galleries of millions, approximate.
    """
    if kind not in INDEX_KINDS:
        raise DaalmlError(f"index kind {kind!r} is unknown: choose one of {', '.join(INDEX_KINDS)}")
    vectors = _as_matrix(embeddings, "embeddings")
    if vectors.shape[0] != len(paths):
        raise DaalmlError(f"{vectors.shape[0]} embeddings for {len(paths)} paths")
    count = vectors.shape[0]
    lists = _default_nlist(count) if nlist is None else nlist
    if kind == "ivf" and not 1 <= lists <= count:
        raise DaalmlError(f"nlist={lists} must be between 1 and the gallery size {count}")
    probes = min(lists, 16) if nprobe is None else nprobe
    if probes < 1 or hnsw_m < 2 or ef_search < 1:
        raise DaalmlError(
            f"nprobe={probes}, hnsw_m={hnsw_m}, ef_search={ef_search}: need nprobe >= 1, "
            "hnsw_m >= 2 and ef_search >= 1"
        )
    params = _Params(kind, lists, probes, hnsw_m, ef_search)
    return RetrievalIndex(
        _faiss_index(vectors, params),
        paths,
        params=params,
        labels=labels,
        class_names=class_names,
        checkpoint=None if checkpoint is None else Path(checkpoint).resolve(),
    )


def embed_folder(
    checkpoint: str | Path,
    images: str | Path,
    *,
    batch_size: int = 64,
    device: str | torch.device | None = None,
) -> tuple[ImageList, torch.Tensor]:
    """The images listed by ``images`` and their embeddings by the checkpoint's model."""
    found = list_images(images)
    module, _ = load_module(checkpoint)
    vectors = embed_images(module, found.paths, batch_size=batch_size, device=device, progress=True)
    return found, vectors
