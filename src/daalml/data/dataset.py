"""A map-style torch dataset over image records, returning ``(image_tensor, label)``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.functional import to_tensor

from daalml.data.images import load_rgb
from daalml.data.records import ImageRecord

Transform = Callable[[Image.Image], torch.Tensor]


class ImageDataset(Dataset[tuple[torch.Tensor, int]]):
    """Decode each record's image as RGB and apply ``transform`` (``to_tensor`` when ``None``)."""

    def __init__(self, records: Sequence[ImageRecord], transform: Transform | None = None) -> None:
        self.records = list(records)
        self.transform: Transform = to_tensor if transform is None else transform
        self._labels = torch.tensor([r.label for r in self.records], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        record = self.records[index]
        return self.transform(load_rgb(record.path)), record.label

    @property
    def labels(self) -> torch.Tensor:
        """All labels in record order, as a LongTensor (for samplers and evaluation)."""
        return self._labels.clone()

    @property
    def num_classes(self) -> int:
        """Number of distinct labels."""
        return int(self._labels.unique().numel())

    @property
    def class_names(self) -> list[str]:
        """The class name of each label value (the label itself where no record names it)."""
        names = {r.label: r.class_name for r in self.records}
        return [names.get(label, str(label)) for label in range(max(names) + 1)]

    def picture(self, index: int) -> np.ndarray:
        """Item ``index`` as the (H, W, 3) uint8 image file it was read from, for pictures."""
        return np.asarray(load_rgb(self.records[index].path))
