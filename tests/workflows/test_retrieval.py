"""`daalml embed / index / search` and the daalml.retrieval API on the easy colour dataset."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from daalml.engine.checkpoint import load_module
from daalml.errors import DaalmlError
from daalml.retrieval import (
    RetrievalIndex,
    build_index,
    embed_images,
    list_images,
    load_embeddings,
    preprocessing,
)
from tests.cli import invoke_fails, invoke_ok
from tests.workflows.conftest import PALETTE, PER_CLASS, colour_image


@pytest.fixture(scope="module")
def module(checkpoint: Path):
    return load_module(checkpoint)[0]


@pytest.fixture(scope="module")
def queries(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """One new image per class (not in any gallery): other noise than the dataset's."""
    root = tmp_path_factory.mktemp("queries")
    return [
        colour_image(root / f"q{c:02d}.png", col, seed=999 + c) for c, col in enumerate(PALETTE)
    ]


@pytest.fixture(scope="module")
def index_dir(
    tmp_path_factory: pytest.TempPathFactory, checkpoint: Path, colour_data: Path
) -> Path:
    out = tmp_path_factory.mktemp("index") / "gallery.index"
    invoke_ok("index", str(checkpoint), str(colour_data), "--output", str(out))
    return out


# ---------------------------------------------------------------------------- image lists
def test_list_images_from_class_folders(colour_data: Path) -> None:
    found = list_images(colour_data)
    assert len(found.paths) == len(PALETTE) * PER_CLASS
    assert found.class_names == [f"class_{c:02d}" for c in range(len(PALETTE))]
    assert found.labels is not None
    assert found.labels[:PER_CLASS] == [0] * PER_CLASS
    assert found.labels[-1] == len(PALETTE) - 1
    assert all(p.is_absolute() for p in found.paths)


def test_list_images_flat_folder_has_no_labels(colour_data: Path) -> None:
    found = list_images(colour_data / "class_03")
    assert [p.name for p in found.paths] == [f"img_{j:03d}.png" for j in range(PER_CLASS)]
    assert found.labels is None and found.class_names is None


def test_list_file_with_tabs_commas_and_comments(tmp_path: Path, colour_data: Path) -> None:
    a = colour_data / "class_00" / "img_000.png"
    b = colour_data / "class_01" / "img_001.png"
    c = colour_data / "class_10" / "img_002.png"
    listing = tmp_path / "list.txt"
    listing.write_text(f"# gallery\n{a}\t10\n\n{b},9\n{c}\t10\n")
    found = list_images(listing)
    assert found.paths == [a, b, c]
    assert found.class_names == ["9", "10"]  # numeric order, not "10" < "9"
    assert found.labels == [1, 0, 1]
    own = colour_image(tmp_path / "imgs" / "a,b.png", (1, 2, 3), seed=0)
    plain = tmp_path / "plain.txt"
    plain.write_text("imgs/a,b.png\n")  # relative to the list's folder; a comma in the name
    found = list_images(plain)
    assert found.paths == [own.resolve()] and found.labels is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("missing.png\n", "line 1: image not found"),
        ("", "lists no images"),
        ("{a}\t1\n{a}\n", "line 2: some lines have a label and some do not"),
    ],
)
def test_bad_list_files(tmp_path: Path, colour_data: Path, content: str, message: str) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text(content.format(a=colour_data / "class_00" / "img_000.png"))
    with pytest.raises(DaalmlError, match=message) as err:
        list_images(listing)
    assert str(listing) in str(err.value)


def test_bad_folders(tmp_path: Path, colour_data: Path) -> None:
    with pytest.raises(DaalmlError, match="no such folder or list file"):
        list_images(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DaalmlError, match="empty: no images"):
        list_images(tmp_path / "empty")
    mixed = tmp_path / "mixed"
    colour_image(mixed / "loose.png", (1, 2, 3), seed=0)
    colour_image(mixed / "cls" / "a.png", (1, 2, 3), seed=0)
    with pytest.raises(DaalmlError, match="both loose images"):
        list_images(mixed)


# ---------------------------------------------------------------------------- embedding
def test_embed_command_writes_npz(
    tmp_path: Path, checkpoint: Path, colour_data: Path, module
) -> None:
    out = tmp_path / "emb.npz"
    args = ["embed", str(checkpoint), str(colour_data), "--output", str(out), "--device", "cpu"]
    assert Path(invoke_ok(*args).strip()) == out
    vectors, images = load_embeddings(out)
    assert vectors.shape == (len(PALETTE) * PER_CLASS, 16)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert images.labels == list_images(colour_data).labels
    assert images.class_names is not None and images.class_names[2] == "class_02"
    # the same embeddings as the model on the same preprocessing, image by image
    first = images.paths[5]
    x = preprocessing(module).transform()(Image.open(first).convert("RGB"))
    with torch.no_grad():
        expected = module.eval()(x[None])[0].numpy()
    assert np.abs(vectors[5] - expected).max() < 1e-5
    with np.load(out) as raw:
        assert str(raw["checkpoint"]) == str(checkpoint.resolve())


def test_embed_images_accepts_pil_images(module, colour_data: Path) -> None:
    path = colour_data / "class_04" / "img_001.png"
    from_path = embed_images(module, [path], device="cpu")
    from_pil = embed_images(module, [Image.open(path)], device="cpu")
    assert torch.allclose(from_path, from_pil)
    with pytest.raises(DaalmlError, match="no images given"):
        embed_images(module, [])


def test_embed_reports_unreadable_images(tmp_path: Path, checkpoint: Path) -> None:
    bad = tmp_path / "imgs" / "broken.png"
    bad.parent.mkdir()
    bad.write_bytes(b"not a png")
    output = invoke_fails(
        "embed", str(checkpoint), str(bad.parent), "--output", str(tmp_path / "e.npz")
    )
    assert "cannot read image" in output and "broken.png" in output


# ---------------------------------------------------------------------------- index + search
def test_index_directory_contents(index_dir: Path, checkpoint: Path) -> None:
    meta = json.loads((index_dir / "index.json").read_text())
    assert (index_dir / "index.faiss").is_file()
    assert meta["kind"] == "flat" and meta["dim"] == 16
    assert meta["count"] == len(PALETTE) * PER_CLASS == len(meta["paths"])
    assert meta["checkpoint"] == str(checkpoint.resolve())
    assert meta["class_names"][0] == "class_00"
    import faiss

    assert faiss.read_index(str(index_dir / "index.faiss")).ntotal == meta["count"]


def test_search_finds_the_query_class_first(index_dir: Path, queries: list[Path]) -> None:
    index = RetrievalIndex.load(index_dir)
    results = index.search(queries, k=PER_CLASS)
    for c, hits in enumerate(results):
        assert len(hits) == PER_CLASS
        assert [h.label for h in hits] == [c] * PER_CLASS
        assert hits[0].class_name == f"class_{c:02d}"
        assert all(a.score >= b.score for a, b in itertools.pairwise(hits))


def test_search_command_text_and_json(index_dir: Path, queries: list[Path]) -> None:
    text = invoke_ok("search", str(index_dir), str(queries[3]), "--k", "2")
    lines = text.strip().splitlines()
    assert lines[0] == f"query: {queries[3]}"
    assert len(lines) == 3 and "class_03" in lines[1] and lines[1].split()[0] == "1"
    single = json.loads(invoke_ok("search", str(index_dir), str(queries[3]), "--k", "3", "--json"))
    assert [set(item) for item in single] == [{"path", "score"}] * 3
    assert all("class_03" in item["path"] for item in single)
    several = json.loads(
        invoke_ok("search", str(index_dir), str(queries[0]), str(queries[1]), "--k", "2", "--json")
    )
    assert [item["query"] for item in several] == [str(queries[0])] * 2 + [str(queries[1])] * 2
    assert "class_01" in several[2]["path"]


def test_search_with_more_k_than_items(index_dir: Path, queries: list[Path]) -> None:
    out = json.loads(invoke_ok("search", str(index_dir), str(queries[0]), "--k", "500", "--json"))
    assert len(out) == len(PALETTE) * PER_CLASS


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_kinds_agree_with_exact(
    tmp_path: Path, checkpoint: Path, colour_data: Path, queries: list[Path], kind: str
) -> None:
    out = tmp_path / kind
    invoke_ok("index", str(checkpoint), str(colour_data), "--output", str(out), "--kind", kind)
    assert json.loads((out / "index.json").read_text())["kind"] == kind
    results = RetrievalIndex.load(out).search(queries, k=2)
    assert [hits[0].label for hits in results] == list(range(len(PALETTE)))


def test_api_matches_brute_force_and_survives_save_load(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((300, 8)).astype(np.float32)
    queries = rng.standard_normal((5, 8)).astype(np.float32)
    paths = [f"item-{i}" for i in range(300)]
    unit = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    expected = np.argsort(-(q @ unit.T), axis=1, kind="stable")[:, :4]
    for kind in ("flat", "ivf", "hnsw"):
        index = build_index(gallery, paths, kind=kind, nprobe=100, ef_search=300)  # ~exact
        loaded = RetrievalIndex.load(index.save(tmp_path / kind))
        for built in (index, loaded):
            scores, found = built.search_embeddings(torch.from_numpy(queries), k=4)
            assert (found == expected).all(), kind
            assert np.allclose(scores, np.take_along_axis(q @ unit.T, expected, 1), atol=1e-5)
        assert loaded.search(queries[:1], k=1)[0][0].path == paths[expected[0, 0]]


def test_index_errors(
    tmp_path: Path, index_dir: Path, queries: list[Path], checkpoint: Path
) -> None:
    with pytest.raises(DaalmlError, match="index kind 'lsh' is unknown"):
        build_index(np.ones((3, 4)), ["a", "b", "c"], kind="lsh")
    with pytest.raises(DaalmlError, match="2 embeddings for 3 paths"):
        build_index(np.ones((2, 4)), ["a", "b", "c"])
    with pytest.raises(DaalmlError, match="dimension 3; the index has 16"):
        RetrievalIndex.load(index_dir).search(np.ones((1, 3)), k=1)
    assert "missing index.json" in invoke_fails("search", str(tmp_path), str(queries[0]))
    assert "no such file" in invoke_fails("search", str(index_dir), str(tmp_path / "nope.png"))
    bogus = invoke_fails("search", str(index_dir), str(queries[0]), "--device", "bogus")
    assert "device 'bogus' is not a valid torch device" in bogus
    bad_kind = ["index", str(checkpoint), str(queries[0].parent), "--output", str(tmp_path / "x")]
    assert "index kind 'lsh' is unknown" in invoke_fails(*bad_kind, "--kind", "lsh")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "index.json").write_text('{"format": 1, "kind": "flat", "count": 1}')
    (broken / "index.faiss").write_bytes(b"junk")
    assert "is not a faiss index" in invoke_fails("search", str(broken), str(queries[0]))


def test_moved_checkpoint_is_a_clear_error(tmp_path: Path, queries: list[Path]) -> None:
    index = build_index(
        np.eye(16, dtype=np.float32),
        [f"p{i}" for i in range(16)],
        checkpoint=tmp_path / "gone.ckpt",
    )
    index.save(tmp_path / "idx")
    output = invoke_fails("search", str(tmp_path / "idx"), str(queries[0]))
    assert "gone.ckpt of this index no longer exists" in output
