"""ImageNet-style evaluation of an image folder, as Once-for-All evaluates its subnets: for a subnet of input
resolution ``r``, every image is resized (bilinear) so its shorter side is ``ceil(r / 0.875)``, centre-cropped
to ``r x r``, scaled to [0, 1] and normalised (ImageNet mean/std by default) — from the original file, per
resolution, not by resizing one stored tensor.

:class:`FolderSplits` is a :class:`nas.data.DataSplits` whose ``at(split, r, n)`` applies this transform to the
split's files (decoded images are cached per (split, resolution), within a memory bound); its stored tensors
(``x_train`` ...) are the same transform at ``data.image_size`` (what training and the shape checks see).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from nas.splits import DataSplits

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_RATIO = 0.875
CACHE_BYTES = 2 << 30  # decoded uint8 images kept in memory across resolutions


def resize_crop(path: Path, r: int, mode: str) -> np.ndarray:
    """One image as OFA's eval transform gives it before normalisation: ``(r, r, C)`` uint8.

    Shorter side to ``ceil(r / 0.875)`` (the longer side scaled and truncated, as torchvision's ``Resize(int)``),
    bilinear; then the centre ``r x r`` window (offsets rounded, as ``CenterCrop``)."""
    from PIL import Image, UnidentifiedImageError

    side = int(math.ceil(r / CROP_RATIO))
    try:
        with Image.open(path) as im:
            im = im.convert(mode)
            w, h = im.size
            nw, nh = (side, int(side * h / w)) if w <= h else (int(side * w / h), side)
            im = im.resize((nw, nh), Image.BILINEAR)
            top, left = int(round((nh - r) / 2.0)), int(round((nw - r) / 2.0))
            im = im.crop((left, top, left + r, top + r))
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"image {str(path)!r} cannot be read ({e}); expected an image file") from e
    return np.asarray(im, dtype=np.uint8).reshape(r, r, -1)


def read_images(files: Sequence[Path], r: int, channels: int, desc: str | None = None) -> torch.Tensor:
    """``(N, C, r, r)`` uint8 tensor of ``files`` through :func:`resize_crop`."""
    mode = "L" if channels == 1 else "RGB"
    out = np.empty((len(files), r, r, channels), dtype=np.uint8)
    for i, p in enumerate(tqdm(files, desc=desc, unit="image", leave=False, disable=desc is None or len(files) < 500)):
        out[i] = resize_crop(p, r, mode)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


@dataclass
class FolderSplits(DataSplits):
    """Splits of an image folder evaluated OFA's way at every subnet resolution (see module doc)."""

    files: dict[str, list[Path]] = field(default_factory=dict)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    _cache: OrderedDict = field(default_factory=OrderedDict, repr=False)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        mean = torch.tensor(self.mean[:c] if c == len(self.mean) else self.mean[:1] * c).view(1, c, 1, 1)
        std = torch.tensor(self.std[:c] if c == len(self.std) else self.std[:1] * c).view(1, c, 1, 1)
        return (x.to(torch.float32) / 255.0 - mean) / std

    def at(self, split: str, r: int, n: int | None = None) -> torch.Tensor:
        if split not in self.files:
            raise ValueError(f"split {split!r} is invalid; expected one of {sorted(self.files)}")
        files = self.files[split][:n]
        key = (split, int(r), len(files))
        for k in list(self._cache):  # the same images at the same resolution, or more of them: no decoding
            if k[:2] == key[:2] and k[2] >= key[2]:
                self._cache.move_to_end(k)
                return self.normalise(self._cache[k][: key[2]])
        x = read_images(files, int(r), self.channels, desc=f"{split} images at {r}px")
        self._cache[key] = x
        while sum(v.numel() for v in self._cache.values()) > CACHE_BYTES and len(self._cache) > 1:
            self._cache.popitem(last=False)
        return self.normalise(x)


def folder_splits(name: str, train: Sequence[tuple[Path, int]], val: Sequence[tuple[Path, int]],
                  test: Sequence[tuple[Path, int]], image_size: int, channels: int, n_classes: int,
                  mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> FolderSplits:
    """:class:`FolderSplits` of (file, label) lists; ``mean``/``std`` None = the training images' own statistics
    at ``image_size`` (what every other loader normalises with)."""
    raw = {s: read_images([p for p, _ in rows], image_size, channels, desc=f"{s} images")
           for s, rows in (("train", train), ("val", val), ("test", test))}
    if mean is None or std is None:
        ref = raw["train"].to(torch.float32) / 255.0
        mean = tuple(float(v) for v in ref.mean((0, 2, 3)))
        std = tuple(float(v) for v in ref.std((0, 2, 3)).clamp_min(1e-6))
    labels = {s: torch.as_tensor(np.array([i for _, i in rows], dtype=np.int64)) for s, rows in
              (("train", train), ("val", val), ("test", test))}
    out = FolderSplits(name, raw["train"][:0].float(), labels["train"], raw["val"][:0].float(), labels["val"],
                       raw["test"][:0].float(), labels["test"], n_classes,
                       files={"train": [p for p, _ in train], "val": [p for p, _ in val], "test": [p for p, _ in test]},
                       mean=tuple(mean), std=tuple(std))
    out.x_train, out.x_val, out.x_test = (out.normalise(raw[s]) for s in ("train", "val", "test"))
    for s in ("train", "val", "test"):
        out._cache[(s, int(image_size), len(raw[s]))] = raw[s]
    return out
