"""`daalml embed`, `index` and `search`: use a trained checkpoint on image files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from daalml.cli.shell import Checkpoint, _guard
from daalml.errors import DaalmlError

Images = Annotated[
    Path,
    typer.Argument(
        help="A folder (class sub-folders or flat) or a list file (path[<tab>|,label] per line)."
    ),
]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Images per forward pass.")]
Device = Annotated[
    str | None, typer.Option("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available).")
]


def embed(
    checkpoint: Checkpoint,
    images: Images,
    output: Annotated[Path, typer.Option("--output", "-o", help="The .npz file to write.")],
    batch_size: BatchSize = 64,
    device: Device = None,
) -> None:
    """Embed images: an .npz with embeddings, paths, and labels/class_names when known."""
    from daalml.retrieval import save_embeddings
    from daalml.workflows.search_index import embed_folder

    def action() -> Path:
        found, vectors = embed_folder(checkpoint, images, batch_size=batch_size, device=device)
        return save_embeddings(output, vectors, found, checkpoint=checkpoint)

    print(_guard(action))


def index(
    checkpoint: Checkpoint,
    images: Images,
    output: Annotated[Path, typer.Option("--output", "-o", help="Index directory to write.")],
    kind: Annotated[
        str,
        typer.Option("--kind", help="flat (exact, default), ivf or hnsw (approximate, large)."),
    ] = "flat",
    batch_size: BatchSize = 64,
    device: Device = None,
) -> None:
    """Embed a gallery and save a faiss index with its paths, labels and checkpoint."""
    from daalml.retrieval import build_index
    from daalml.workflows.search_index import embed_folder

    def action() -> Path:
        found, vectors = embed_folder(checkpoint, images, batch_size=batch_size, device=device)
        built = build_index(
            vectors,
            found.paths,
            kind=kind,
            labels=found.labels,
            class_names=found.class_names,
            checkpoint=checkpoint,
        )
        return built.save(output)

    print(_guard(action))


def search(
    index_dir: Annotated[Path, typer.Argument(help="A directory written by `daalml index`.")],
    queries: Annotated[list[Path], typer.Argument(help="Query image files.")],
    k: Annotated[int, typer.Option("--k", "-k", help="Results per query.")] = 8,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print JSON: one query -> [{path, score}]; several -> a flat list of "
            "{query, path, score}, by query then rank.",
        ),
    ] = False,
    checkpoint: Annotated[
        Path | None,
        typer.Option("--checkpoint", help="Embed queries with this checkpoint, not the index's."),
    ] = None,
    device: Device = None,
) -> None:
    """Print the k most similar gallery images (cosine similarity) of each query image."""
    from daalml.retrieval import RetrievalIndex

    def action() -> list:
        loaded = RetrievalIndex.load(index_dir)
        for query in queries:
            if not query.is_file():
                raise DaalmlError(f"query image {query}: no such file")
        module = None
        if checkpoint is not None:
            from daalml.engine.checkpoint import load_module

            module, _ = load_module(checkpoint)
        return loaded.search(list(queries), k, module=module, device=device)

    results = _guard(action)
    if as_json:
        if len(queries) == 1:
            payload: list = [{"path": h.path, "score": h.score} for h in results[0]]
        else:
            payload = [
                {"query": str(q), "path": h.path, "score": h.score}
                for q, hits in zip(queries, results, strict=True)
                for h in hits
            ]
        print(json.dumps(payload, indent=1))
        return
    for query, hits in zip(queries, results, strict=True):
        print(f"query: {query}")
        for rank, hit in enumerate(hits, start=1):
            name = f"  [{hit.class_name}]" if hit.class_name is not None else ""
            print(f"{rank:4d}  {hit.score:.4f}  {hit.path}{name}")
