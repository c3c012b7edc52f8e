"""Loaders for every official layout: splits, labels, class-disjointness and error messages."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from scipy.io import loadmat, savemat

from daalml.data.layouts import DATASETS, load_splits
from daalml.data.records import DatasetSplits, ImageRecord
from daalml.data.registry import categories_of
from daalml.errors import DaalmlError
from tests.data.builders import make_cars, make_csv, make_cub, make_folder, make_inshop, make_sop

BUILDERS: dict[str, Callable[..., Path]] = {
    "cub200": make_cub,
    "cars196": make_cars,
    "sop": make_sop,
    "inshop": make_inshop,
    "folder": make_folder,
    "csv": make_csv,
}


def _check_split(part: list[ImageRecord], n_classes: int, per_class: int) -> None:
    """Contiguous labels 0..n-1, one class name per label, every image on disk."""
    assert sorted({r.label for r in part}) == list(range(n_classes))
    assert len(part) == n_classes * per_class
    names = {r.label: r.class_name for r in part}
    assert all(names[r.label] == r.class_name for r in part)
    assert len(set(names.values())) == n_classes
    assert all(r.path.is_file() and r.path.is_absolute() for r in part)


def _assert_disjoint(splits: DatasetSplits) -> None:
    assert not {r.class_name for r in splits.train} & {r.class_name for r in splits.test}
    assert not {r.path for r in splits.train} & {r.path for r in splits.test}


def test_dataset_names_match_builders() -> None:
    assert set(DATASETS) == set(BUILDERS)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_default_split_is_half_the_classes(tmp_path: Path, name: str) -> None:
    path = BUILDERS[name](tmp_path / name, n_classes=6, per_class=2, size=8)
    splits = load_splits(name, path)
    assert splits.name == name
    assert splits.num_train_classes == 3
    assert splits.num_test_classes == 3
    _check_split(splits.train, 3, 2)
    _check_split(splits.test, 3, 2)
    _assert_disjoint(splits)


@pytest.mark.parametrize("name", ["cub200", "cars196", "folder", "csv"])
def test_train_classes_moves_the_cut(tmp_path: Path, name: str) -> None:
    path = BUILDERS[name](tmp_path / name, n_classes=5, per_class=2, size=8)
    splits = load_splits(name, path, train_classes=4)
    assert (splits.num_train_classes, splits.num_test_classes) == (4, 1)
    _assert_disjoint(splits)
    default = load_splits(name, path)
    # An odd class count gives test the extra class.
    assert (default.num_train_classes, default.num_test_classes) == (2, 3)


@pytest.mark.parametrize("name", ["cub200", "cars196", "folder", "csv"])
@pytest.mark.parametrize("train_classes", [0, 4, -1])
def test_train_classes_out_of_range(tmp_path: Path, name: str, train_classes: int) -> None:
    path = BUILDERS[name](tmp_path / name, n_classes=4, per_class=1, size=8)
    with pytest.raises(DaalmlError, match=rf"train_classes={train_classes} is out of range"):
        load_splits(name, path, train_classes=train_classes)


@pytest.mark.parametrize("name", ["sop", "inshop"])
def test_train_classes_refused_for_published_splits(tmp_path: Path, name: str) -> None:
    path = BUILDERS[name](tmp_path / name, size=8)
    with pytest.raises(DaalmlError, match=f"train_classes is not supported for {name}"):
        load_splits(name, path, train_classes=1)


def test_cub_class_order_follows_official_ids(tmp_path: Path) -> None:
    root = make_cub(tmp_path / "CUB_200_2011", n_classes=12, per_class=1, size=8)
    splits = load_splits("cub200", root)
    assert [r.class_name for r in splits.train] == [f"{i:03d}.Bird_{i}" for i in range(1, 7)]
    assert [r.label for r in splits.test] == list(range(6))
    assert splits.test[0].class_name == "007.Bird_7"


def test_cub_accepts_parent_folder(tmp_path: Path) -> None:
    make_cub(tmp_path / "CUB_200_2011", size=8)
    splits = load_splits("cub200", tmp_path)
    assert splits.root == tmp_path / "CUB_200_2011"
    assert splits.num_train_classes == 2


def test_sop_accepts_parent_folder(tmp_path: Path) -> None:
    make_sop(tmp_path / "Stanford_Online_Products", size=8)
    assert load_splits("sop", tmp_path).num_test_classes == 2


def test_sop_uses_published_split(tmp_path: Path) -> None:
    root = make_sop(tmp_path, n_classes=6, per_class=2, size=8)
    # Swap the files: the loader must follow them, not any class-id rule.
    train_txt, test_txt = root / "Ebay_train.txt", root / "Ebay_test.txt"
    a, b = train_txt.read_text(), test_txt.read_text()
    train_txt.write_text(b)
    test_txt.write_text(a)
    splits = load_splits("sop", root)
    assert {r.class_name.split("/")[1] for r in splits.train} == {"4", "5", "6"}
    assert splits.train[0].class_name == "chair_final/4"


def test_inshop_query_gallery(tmp_path: Path) -> None:
    root = make_inshop(tmp_path, n_classes=6, per_class=4, size=8)
    splits = load_splits("inshop", root)
    assert splits.query is not None and splits.gallery is not None
    assert splits.test == splits.query + splits.gallery
    assert len(splits.query) == len(splits.gallery) == 6
    assert {r.label for r in splits.query} == {r.label for r in splits.gallery} == {0, 1, 2}
    by_label = {r.label: r.class_name for r in splits.test}
    assert all(by_label[r.label] == r.class_name for r in splits.gallery)
    _assert_disjoint(splits)


def test_sop_and_inshop_categories(tmp_path: Path) -> None:
    sop = load_splits("sop", make_sop(tmp_path / "sop", n_classes=4, per_class=2, size=8))
    # test classes 3 and 4: bicycle_final and chair_final alternate by class id
    assert categories_of("sop", sop.test) == ["bicycle_final"] * 2 + ["chair_final"] * 2
    inshop = load_splits("inshop", make_inshop(tmp_path / "inshop", n_classes=4, size=8))
    assert inshop.query is not None
    assert categories_of("inshop", inshop.query) == ["WOMEN/Dresses"] * 2 + ["MEN/Denim"] * 2
    folder = load_splits("folder", make_folder(tmp_path / "folder", size=8))
    assert categories_of("folder", folder.test) is None


def test_inshop_images_under_img_folder_of_archive(tmp_path: Path) -> None:
    make_inshop(tmp_path / "Img", size=8)
    eval_dir = tmp_path / "Eval"
    eval_dir.mkdir()
    (tmp_path / "Img" / "list_eval_partition.txt").rename(eval_dir / "list_eval_partition.txt")
    splits = load_splits("inshop", tmp_path)
    assert splits.train[0].path.is_relative_to(tmp_path / "Img" / "img")


def test_csv_numeric_labels_sort_numerically(tmp_path: Path) -> None:
    path = make_csv(tmp_path, n_classes=12, per_class=1, size=8)
    splits = load_splits("csv", path)
    assert [r.class_name for r in splits.train] == [str(i) for i in range(1, 7)]


def test_csv_split_column_is_used(tmp_path: Path) -> None:
    path = make_csv(tmp_path, n_classes=4, per_class=2, size=8, with_split=True)
    rows = path.read_text().splitlines()
    # Mark class 1 as test and class 4 as train: the column decides, not the label order.
    rows = [
        r.replace(",1,train", ",1,test") if "/1/" in r else r.replace(",4,test", ",4,train")
        for r in rows
    ]
    path.write_text("\n".join(rows) + "\n")
    splits = load_splits("csv", path)
    assert {r.class_name for r in splits.train} == {"2", "4"}
    assert {r.class_name for r in splits.test} == {"1", "3"}
    assert sorted({r.label for r in splits.test}) == [0, 1]


def test_csv_absolute_paths_and_string_labels(tmp_path: Path) -> None:
    images = make_folder(tmp_path / "imgs", n_classes=3, per_class=1, size=8)
    path = tmp_path / "sub" / "list.csv"
    path.parent.mkdir()
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        for image in sorted(images.rglob("*.jpg")):
            writer.writerow([str(image), f"cls-{image.parent.name}"])
    splits = load_splits("csv", path)
    assert [r.class_name for r in splits.train] == ["cls-class_00"]
    assert len(splits.test) == 2


def test_folder_skips_non_images_and_hidden(tmp_path: Path) -> None:
    root = make_folder(tmp_path, n_classes=2, per_class=2, size=8)
    (root / "class_00" / "notes.txt").write_text("not an image")
    (root / ".cache").mkdir()
    (root / "README.md").write_text("x")
    nested = make_folder(root / "class_01" / "more", n_classes=1, per_class=1, size=8)
    splits = load_splits("folder", root)
    assert len(splits.train) == 2
    assert len(splits.test) == 3
    assert any(r.path.is_relative_to(nested) for r in splits.test)


# --- errors -------------------------------------------------------------------------------


def test_unknown_dataset_lists_valid_names(tmp_path: Path) -> None:
    with pytest.raises(DaalmlError, match=r"unknown dataset 'imagenet'; valid: cub200, cars196"):
        load_splits("imagenet", tmp_path)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_missing_root(tmp_path: Path, name: str) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DaalmlError, match=r"dataset root does not exist: .*nope$"):
        load_splits(name, missing)


@pytest.mark.parametrize("missing", ["images.txt", "image_class_labels.txt", "classes.txt"])
def test_cub_missing_layout_file(tmp_path: Path, missing: str) -> None:
    root = make_cub(tmp_path, size=8)
    (root / missing).unlink()
    with pytest.raises(
        DaalmlError, match=rf"CUB-200-2011 layout expected at .*: missing {missing}"
    ):
        load_splits("cub200", root)


@pytest.mark.parametrize(
    ("name", "missing", "message"),
    [
        ("cars196", "cars_annos.mat", r"Cars196 layout expected at .*: missing cars_annos.mat"),
        ("sop", "Ebay_train.txt", r"Online Products layout expected at .*: missing Ebay_train.txt"),
        ("sop", "Ebay_test.txt", r"Online Products layout expected at .*: missing Ebay_test.txt"),
        ("inshop", "list_eval_partition.txt", r"In-Shop .* missing list_eval_partition.txt"),
    ],
)
def test_missing_layout_file(tmp_path: Path, name: str, missing: str, message: str) -> None:
    root = BUILDERS[name](tmp_path, size=8)
    (root / missing).unlink()
    with pytest.raises(DaalmlError, match=message):
        load_splits(name, root)


def _edit_line(path: Path, number: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("file", "line", "text", "message"),
    [
        ("images.txt", 2, "2 a b", r"images.txt line 2: expected 2 columns, got 3"),
        (
            "images.txt",
            3,
            "x 001.Bird_1/a.jpg",
            r"images.txt line 3: image id 'x' is not an integer",
        ),
        ("image_class_labels.txt", 4, "4 four", r"image_class_labels.txt line 4: class id 'four'"),
        ("image_class_labels.txt", 1, "1 99", r"image_class_labels.txt line 1: class id 99 not in"),
        ("classes.txt", 2, "2", r"classes.txt line 2: expected 2 columns, got 1"),
        ("images.txt", 2, "1 001.Bird_1/x.jpg", r"images.txt line 2: duplicate image id 1"),
    ],
)
def test_cub_malformed_lines(tmp_path: Path, file: str, line: int, text: str, message: str) -> None:
    root = make_cub(tmp_path, size=8)
    _edit_line(root / file, line, text)
    with pytest.raises(DaalmlError, match=message):
        load_splits("cub200", root)


def test_cub_image_without_label(tmp_path: Path) -> None:
    root = make_cub(tmp_path, size=8)
    _edit_line(root / "image_class_labels.txt", 5, "")
    with pytest.raises(DaalmlError, match=r"image_class_labels.txt: no class for image id 5"):
        load_splits("cub200", root)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_listed_image_missing_on_disk(tmp_path: Path, name: str) -> None:
    path = BUILDERS[name](tmp_path / "ds", size=8)
    splits = load_splits(name, path)
    victim = splits.test[-1].path
    victim.unlink()
    if name == "folder":
        # A folder tree lists what is on disk; an emptied folder is not a class (a warning).
        for other in list(victim.parent.iterdir()):
            other.unlink()
        with pytest.warns(UserWarning, match=r"ignoring folders without images .*: class_03"):
            splits = load_splits(name, path)
        assert "class_03" not in {r.class_name for r in splits.train + splits.test}
        return
    with pytest.raises(DaalmlError, match=rf"image not found: {victim}$"):
        load_splits(name, path)


def test_cars_mat_structure_errors(tmp_path: Path) -> None:
    root = make_cars(tmp_path, size=8)
    mat_path = root / "cars_annos.mat"
    mat = loadmat(str(mat_path))
    savemat(str(mat_path), {"annotations": mat["annotations"]})
    with pytest.raises(DaalmlError, match=r"cars_annos.mat: missing variable 'class_names'"):
        load_splits("cars196", root)

    annotations = mat["annotations"]
    fields = [f for f in annotations.dtype.names if f != "class"]
    stripped = np.zeros(annotations.shape, dtype=[(f, "O") for f in fields])
    for f in fields:
        stripped[f] = annotations[f]
    savemat(str(mat_path), {"annotations": stripped, "class_names": mat["class_names"]})
    with pytest.raises(DaalmlError, match=r"'annotations' has no field 'class'"):
        load_splits("cars196", root)

    annotations[0, 2]["class"] = np.array([[9]], dtype=np.uint8)
    savemat(str(mat_path), {"annotations": annotations, "class_names": mat["class_names"]})
    with pytest.raises(DaalmlError, match=r"annotation 3 \(car_ims/000003.jpg\) has class 9"):
        load_splits("cars196", root)

    mat_path.write_text("not a mat file")
    with pytest.raises(DaalmlError, match=r"cars_annos.mat: not a readable MATLAB file"):
        load_splits("cars196", root)


@pytest.mark.parametrize(
    ("line", "text", "message"),
    [
        (1, "image_id class_id super path", r"Ebay_train.txt line 1: expected header"),
        (3, "2 1 1", r"Ebay_train.txt line 3: expected 4 columns, got 3"),
        (2, "1 one 1 bicycle_final/111085122001_0.JPG", r"line 2: class_id 'one' is not an"),
    ],
)
def test_sop_malformed(tmp_path: Path, line: int, text: str, message: str) -> None:
    root = make_sop(tmp_path, size=8)
    _edit_line(root / "Ebay_train.txt", line, text)
    with pytest.raises(DaalmlError, match=message):
        load_splits("sop", root)


def test_sop_overlapping_classes_rejected(tmp_path: Path) -> None:
    root = make_sop(tmp_path, size=8)
    test_txt = root / "Ebay_test.txt"
    first_train_row = (root / "Ebay_train.txt").read_text().splitlines()[1]
    test_txt.write_text(test_txt.read_text() + first_train_row + "\n")
    with pytest.raises(DaalmlError, match=r"classes are in both train and test"):
        load_splits("sop", root)


@pytest.mark.parametrize(
    ("line", "text", "message"),
    [
        (1, "many", r"line 1: image count 'many' is not an integer"),
        (1, "99", r"line 1: announces 99 images but lists 12"),
        (2, "image_name item_id", r"line 2: expected header"),
        (3, "img/a.jpg id_1 train extra", r"line 3: expected 3 columns, got 4"),
        (4, "img/a.jpg id_1 val", r"line 4: evaluation_status 'val' is not one of"),
    ],
)
def test_inshop_malformed(tmp_path: Path, line: int, text: str, message: str) -> None:
    root = make_inshop(tmp_path, size=8)
    _edit_line(root / "list_eval_partition.txt", line, text)
    with pytest.raises(DaalmlError, match=message):
        load_splits("inshop", root)


def test_inshop_needs_gallery(tmp_path: Path) -> None:
    root = make_inshop(tmp_path, size=8)
    listing = root / "list_eval_partition.txt"
    listing.write_text(listing.read_text().replace(" gallery", " query"))
    with pytest.raises(DaalmlError, match=r"list_eval_partition.txt: no gallery images"):
        load_splits("inshop", root)


def test_folder_needs_two_classes(tmp_path: Path) -> None:
    root = make_folder(tmp_path, n_classes=1, size=8)
    with pytest.raises(DaalmlError, match=r"folder layout at .*: found 1 class folders, need"):
        load_splits("folder", root)


def test_folder_root_is_a_file(tmp_path: Path) -> None:
    path = make_csv(tmp_path, size=8)
    with pytest.raises(DaalmlError, match=r"folder layout expected at .*labels.csv: not a dir"):
        load_splits("folder", path)


def _write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([["file", "label"]], r"line 1: expected header 'path,label' or 'path,label,split'"),
        ([["path", "label", "fold"]], r"line 1: expected header"),
        ([["path", "label"]], r"labels.csv: lists no images"),
        ([["path", "label"], ["images/1/0.jpg"]], r"line 2: expected 2 non-empty fields"),
        ([["path", "label"], ["images/1/0.jpg", ""]], r"line 2: expected 2 non-empty fields"),
        (
            [["path", "label", "split"], ["images/1/0.jpg", "1", "val"]],
            r"line 2: split 'val' is not 'train' or 'test'",
        ),
        (
            [
                ["path", "label", "split"],
                ["images/1/0.jpg", "1", "train"],
                ["images/1/1.jpg", "1", "test"],
            ],
            r"line 3: label '1' is in both train and test",
        ),
        (
            [
                ["path", "label", "split"],
                ["images/1/0.jpg", "1", "train"],
                ["images/2/0.jpg", "2", "train"],
            ],
            r"no rows with split 'test'",
        ),
        (
            [["path", "label"], ["images/9/0.jpg", "9"]],
            r"line 2: listed image not found: .*9/0.jpg",
        ),
    ],
)
def test_csv_errors(tmp_path: Path, rows: list[list[str]], message: str) -> None:
    make_csv(tmp_path, size=8)
    path = _write_csv(tmp_path / "labels.csv", rows)
    with pytest.raises(DaalmlError, match=message):
        load_splits("csv", path)


def test_csv_split_column_refuses_train_classes(tmp_path: Path) -> None:
    path = make_csv(tmp_path, size=8, with_split=True)
    with pytest.raises(DaalmlError, match=r"labels.csv: has a split column, so train_classes"):
        load_splits("csv", path, train_classes=1)


def test_csv_root_must_be_file(tmp_path: Path) -> None:
    make_csv(tmp_path, size=8)
    with pytest.raises(DaalmlError, match=r"csv dataset expects the CSV file path, got the folder"):
        load_splits("csv", tmp_path)
