"""What every dataset loader returns: train/val/test tensors and labels, and how a subnet of resolution r sees them."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class DataSplits:
    """Normalised float tensors (N, C, H, W) and int64 labels for train / val / test."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int

    @property
    def channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[-1])

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}

    def at(self, split: str, r: int, n: int | None = None) -> torch.Tensor:
        """The first ``n`` images (all when None) of ``split`` ("train", "val", "test") as a subnet of input
        resolution ``r`` sees them: here a bilinear resize of the stored tensors; a dataset with a per-resolution
        evaluation transform (``data.eval_transform=ofa``) overrides it."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"split {split!r} is invalid; expected train, val or test")
        return resize(getattr(self, f"x_{split}")[:n], r)


def resize(x: torch.Tensor, r: int) -> torch.Tensor:
    """Bilinear resize of a batch to r x r (no-op when it already is)."""
    if x.shape[-1] == r and x.shape[-2] == r:
        return x
    return F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False)
