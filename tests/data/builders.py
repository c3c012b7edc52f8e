"""Builders that write tiny datasets in each official on-disk layout, for tests.

Each ``make_*`` writes under ``root`` exactly as the real archive unpacks (same file names,
headers, column order and MATLAB structure) and returns the path to hand to ``load_splits``.
Classes are numbered from 1 like the official ids; images are small solid-colour JPEG/PNG files.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, size: int = 32, seed: int = 0) -> Path:
    """Write a small RGB image whose colour depends on ``seed`` (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = ((53 * seed) % 256, (97 * seed + 40) % 256, (29 * seed + 90) % 256)
    Image.new("RGB", (size, size), colour).save(path)
    return path


def make_cub(root: Path, n_classes: int = 4, per_class: int = 3, size: int = 32) -> Path:
    """CUB-200-2011 layout (``CUB_200_2011/`` contents) at ``root``; returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    images, labels, split, boxes, classes = [], [], [], [], []
    image_id = 0
    for class_id in range(1, n_classes + 1):
        name = f"{class_id:03d}.Bird_{class_id}"
        classes.append(f"{class_id} {name}")
        for j in range(per_class):
            image_id += 1
            rel = f"{name}/Bird_{class_id}_{j + 1:04d}_{image_id}.jpg"
            write_image(root / "images" / rel, size, image_id)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {class_id}")
            split.append(f"{image_id} {j % 2}")
            boxes.append(f"{image_id} 1.0 2.0 {size - 3}.0 {size - 4}.0")
    for name, lines in (
        ("images.txt", images),
        ("image_class_labels.txt", labels),
        ("train_test_split.txt", split),
        ("bounding_boxes.txt", boxes),
        ("classes.txt", classes),
    ):
        (root / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def make_cars(root: Path, n_classes: int = 4, per_class: int = 3, size: int = 32) -> Path:
    """Cars196 layout at ``root``: ``cars_annos.mat`` (scipy.io.savemat) and ``car_ims/``."""
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    count = n_classes * per_class
    annotations = np.zeros((1, count), dtype=[(f, "O") for f in fields])
    for index in range(count):
        rel = f"car_ims/{index + 1:06d}.jpg"
        write_image(root / rel, size, index + 1)
        entry = annotations[0, index]
        entry["relative_im_path"] = np.array([rel])
        for field, value in zip(fields[1:5], (1, 2, size - 3, size - 4), strict=True):
            entry[field] = np.array([[value]], dtype=np.uint8)
        entry["class"] = np.array([[index // per_class + 1]], dtype=np.uint8)
        entry["test"] = np.array([[index % 2]], dtype=np.uint8)
    class_names = np.empty((1, n_classes), dtype=object)
    for c in range(n_classes):
        class_names[0, c] = np.array([f"Maker Model {c + 1} Sedan 2012"])
    savemat(str(root / "cars_annos.mat"), {"annotations": annotations, "class_names": class_names})
    return root


def _sop_row(image_id: int, class_id: int, super_id: int, path: str) -> str:
    return f"{image_id} {class_id} {super_id} {path}"


def make_sop(root: Path, n_classes: int = 4, per_class: int = 3, size: int = 32) -> Path:
    """Stanford Online Products layout at ``root``; the first ``n_classes // 2`` train."""
    root.mkdir(parents=True, exist_ok=True)
    header = "image_id class_id super_class_id path"
    supers = ("bicycle_final", "chair_final")
    train, test, info = [header], [header], [header]
    n_train = n_classes // 2
    for class_id in range(1, n_classes + 1):
        super_id = 1 + (class_id - 1) % len(supers)
        listing = train if class_id <= n_train else test
        product = 111085122000 + class_id
        for j in range(per_class):
            rel = f"{supers[super_id - 1]}/{product}_{j}.JPG"
            write_image(root / rel, size, class_id * 10 + j)
            info.append(_sop_row(len(info), class_id, super_id, rel))
            listing.append(_sop_row(len(listing), class_id, super_id, rel))
    for name, lines in (
        ("Ebay_train.txt", train),
        ("Ebay_test.txt", test),
        ("Ebay_info.txt", info),
    ):
        (root / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def make_inshop(root: Path, n_classes: int = 4, per_class: int = 3, size: int = 32) -> Path:
    """In-Shop layout at ``root``: ``list_eval_partition.txt`` and ``img/``.

    The first ``n_classes // 2`` items train; each test item's images alternate query/gallery.
    """
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    n_train = n_classes // 2
    for item in range(1, n_classes + 1):
        item_id = f"id_{item:08d}"
        folder = "WOMEN/Dresses" if item % 2 else "MEN/Denim"
        for j in range(per_class):
            rel = f"img/{folder}/{item_id}/{j + 1:02d}_{j % 4 + 1}_front.jpg"
            write_image(root / rel, size, item * 10 + j)
            status = "train" if item <= n_train else ("query" if j % 2 == 0 else "gallery")
            rows.append(f"{rel:<65}{item_id} {status}")
    lines = [str(len(rows)), "image_name item_id evaluation_status", *rows]
    (root / "list_eval_partition.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def make_folder(root: Path, n_classes: int = 4, per_class: int = 3, size: int = 32) -> Path:
    """Class-per-folder tree at ``root`` (alternating .jpg/.png files); returns ``root``."""
    for c in range(n_classes):
        for j in range(per_class):
            suffix = ".jpg" if j % 2 == 0 else ".png"
            write_image(root / f"class_{c:02d}" / f"img_{j:03d}{suffix}", size, c * 10 + j)
    return root


def make_csv(
    root: Path,
    n_classes: int = 4,
    per_class: int = 3,
    size: int = 32,
    *,
    with_split: bool = False,
) -> Path:
    """Images under ``root/images`` listed in ``root/labels.csv``; returns the CSV path.

    Labels are integers 1..n (so numeric ordering matters once n >= 10); with ``with_split`` the
    first ``n_classes // 2`` labels are marked train and the rest test.
    """
    root.mkdir(parents=True, exist_ok=True)
    csv_path = root / "labels.csv"
    header = ["path", "label"] + (["split"] if with_split else [])
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for label in range(1, n_classes + 1):
            for j in range(per_class):
                rel = f"images/{label}/{j}.jpg"
                write_image(root / rel, size, label * 10 + j)
                split = ["train" if label <= n_classes // 2 else "test"] if with_split else []
                writer.writerow([rel, str(label), *split])
    return csv_path


def make_noise_folder(
    root: Path, n_classes: int = 4, per_class: int = 3, size: int = 32, seed: int = 0
) -> Path:
    """Class-per-folder tree of random-noise PNGs (crops and flips change them, unlike solid
    colours); returns ``root``."""
    rng = np.random.default_rng(seed)
    for c in range(n_classes):
        folder = root / f"class_{c:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            pixels[..., c % 3] //= 2  # a little class signal
            Image.fromarray(pixels).save(folder / f"img_{j:03d}.png")
    return root
