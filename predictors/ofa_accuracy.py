"""Once-for-All's published accuracy predictor for the MobileNetV3 w1.0 supernet on ImageNet, behind the project's
predictor face (``fit(archs, y)`` / ``predict(archs, return_std=False)`` on ``ofa_mbv3`` architectures).

Two checkpoint layouts are read (both with ``torch.load(weights_only=True)``: a file that needs code is refused):

* ``ofa.nas.accuracy_predictor.AccuracyPredictor`` (``layers.0.0.weight`` ... ``layers.3.weight``, ``base_acc``):
  features = one-hot resolution over the encoder's ``image_size_list``, then per block (20) one-hot kernel
  {3,5,7}, then per block one-hot expand {3,4,6}; inactive blocks all zero. The resolution list is not in the
  file: it is read from the input width (25 -> 128..224 step 4, 1 -> [224]) or given as ``resolutions``.
* the tutorial's ``acc_predictor.pth`` (``0.weight`` ... ``6.bias``, 128 inputs): per block one-hot kernel,
  per block one-hot expand, one-hot of ``(r - 112) // 16`` over 8.

The imported network is fixed. ``fit`` learns only an affine map of its output onto accuracies the run measured
(least squares), so a constraint on accuracy reads the user's own validation scale; unfitted, ``predict`` returns
the published predictor's values.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from search_spaces.ofa_mbv3.arch import IMAGENET_RESOLUTIONS, N_LAYERS
from search_spaces.ofa_mbv3.encoding import choice_indices

LAYOUTS = ("encoder", "tutorial")


def _read(path: str | Path) -> dict[str, np.ndarray]:
    from search_spaces.ofa_mbv3.published import read_state

    state = read_state(path, "accuracy predictor", "OFA's AccuracyPredictor weights (.pth)")
    return {k: v.detach().double().numpy() for k, v in state.items()}


class OFAAccuracyPredictor:
    """OFA's MLP accuracy predictor on ``ofa_mbv3`` architectures (ImageNet top-1 as a fraction).

    Args:
        weights: ``[(W, b), ...]`` of the MLP's linear layers (ReLU between them; ``b`` may be None).
        layout: ``encoder`` or ``tutorial`` (see module doc).
        resolutions: the encoder layout's resolution list (its one-hot order).
        base: the constant added to the output (``base_acc`` of the encoder layout).
    """

    def __init__(self, weights: Sequence[tuple[np.ndarray, np.ndarray | None]], layout: str = "encoder",
                 resolutions: Sequence[int] = IMAGENET_RESOLUTIONS, base: float = 0.0) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"layout {layout!r} is invalid; expected one of {list(LAYOUTS)}")
        self.weights = [(np.asarray(W, float), None if b is None else np.asarray(b, float)) for W, b in weights]
        self.layout = layout
        self.resolutions = tuple(int(r) for r in resolutions)
        self.base = float(base)
        width = self.weights[0][0].shape[1]
        need = 128 if layout == "tutorial" else len(self.resolutions) + 2 * N_LAYERS * 3
        if width != need:
            raise ValueError(f"accuracy predictor takes {width} inputs; expected {need} for layout {layout!r} "
                             f"with {len(self.resolutions)} resolutions")

    @classmethod
    def from_checkpoint(cls, path: str | Path, resolutions: Sequence[int] | None = None) -> OFAAccuracyPredictor:
        """Read OFA's checkpoint (either layout) without running code."""
        s = _read(path)
        if "layers.0.0.weight" in s:
            n = sum(1 for k in s if k.startswith("layers.") and k.endswith(".0.weight"))
            weights = [(s[f"layers.{i}.0.weight"], s.get(f"layers.{i}.0.bias")) for i in range(n)]
            if f"layers.{n}.weight" not in s:
                raise ValueError(f"accuracy predictor {str(path)!r} lacks 'layers.{n}.weight'; expected OFA's "
                                 "AccuracyPredictor weights")
            weights.append((s[f"layers.{n}.weight"], s.get(f"layers.{n}.bias")))
            n_res = weights[0][0].shape[1] - 2 * N_LAYERS * 3
            if resolutions is None:
                defaults = {len(IMAGENET_RESOLUTIONS): IMAGENET_RESOLUTIONS, 1: (224,)}
                if n_res not in defaults:
                    raise ValueError(f"accuracy predictor {str(path)!r} encodes {n_res} resolutions; pass its "
                                     "encoder's image_size_list as resolutions")
                resolutions = defaults[n_res]
            return cls(weights, "encoder", resolutions, float(s.get("base_acc", np.zeros(1)).ravel()[0]))
        if "0.weight" in s:
            idx = sorted(int(k.split(".")[0]) for k in s if k.endswith(".weight"))
            return cls([(s[f"{i}.weight"], s.get(f"{i}.bias")) for i in idx], "tutorial")
        first = next(iter(s), None)
        raise ValueError(f"accuracy predictor {str(path)!r} has key {first!r}; expected OFA's AccuracyPredictor "
                         "('layers.0.0.weight', ...) or the tutorial's ('0.weight', ...)")

    # --- the predictor face --------------------------------------------------------------------
    def features(self, archs: Sequence[Any]) -> np.ndarray:
        """OFA's input encoding of ``archs`` (``ofa_mbv3`` architectures)."""
        k, e, _, r, active = choice_indices(list(archs))
        n, rows = len(archs), np.arange(len(archs))[:, None]
        blocks = np.arange(N_LAYERS)[None, :] * 3
        if self.layout == "tutorial":
            x = np.zeros((n, 128))
            x[rows, blocks + k] = active
            x[rows, 60 + blocks + e] = active
            slot = (r - 112) // 16
            if n and (slot.min() < 0 or slot.max() > 7):
                raise ValueError(f"resolution r={int(r[(slot < 0) | (slot > 7)][0])} is outside the tutorial "
                                 "predictor's 112..239")
            x[np.arange(n), 120 + slot] = 1.0
            return x
        R = len(self.resolutions)
        pos = {v: i for i, v in enumerate(self.resolutions)}
        bad = [int(v) for v in r if int(v) not in pos]
        if bad:
            raise ValueError(f"resolution r={bad[0]} is not among the accuracy predictor's resolutions "
                             f"{list(self.resolutions)}")
        x = np.zeros((n, R + 2 * N_LAYERS * 3))
        x[np.arange(n), [pos[int(v)] for v in r]] = 1.0
        x[rows, R + blocks + k] = active
        x[rows, R + N_LAYERS * 3 + blocks + e] = active
        return x

    def _raw(self, archs: Sequence[Any]) -> np.ndarray:
        h = self.features(archs)
        for i, (W, b) in enumerate(self.weights):
            h = h @ W.T + (0.0 if b is None else b)
            if i < len(self.weights) - 1:
                h = np.maximum(h, 0.0)
        return h[:, 0] + self.base

    def fit(self, archs: Sequence[Any], y: Any) -> OFAAccuracyPredictor:
        """Least-squares affine map of the imported predictions onto measured accuracies ``y`` (>= 2 archs)."""
        y = np.asarray(y, dtype=float)
        p = self._raw(archs)
        if len(y) != len(p) or len(y) < 2:
            raise ValueError(f"fit needs >= 2 architectures with one accuracy each; got {len(p)} archs, {len(y)} values")
        A = np.column_stack([p, np.ones_like(p)])
        self.scale_, self.offset_ = (float(v) for v in np.linalg.lstsq(A, y, rcond=None)[0])
        return self

    def predict(self, archs: Sequence[Any], return_std: bool = False) -> Any:
        mean = self._raw(archs)
        if hasattr(self, "scale_"):
            mean = self.scale_ * mean + self.offset_
        return (mean, np.zeros_like(mean)) if return_std else mean

    # --- data-only storage -------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write an ``.npz`` of arrays only (no pickle), atomically (temp file beside ``path``, then rename)."""
        from latency_luts.files import atomic_path

        path = Path(path)
        arrays: dict[str, np.ndarray] = {"format": np.array("hwnas.ofa_accuracy.v1"), "layout": np.array(self.layout),
                                         "resolutions": np.asarray(self.resolutions), "base": np.array(self.base)}
        for i, (W, b) in enumerate(self.weights):
            arrays[f"W{i}"] = W
            if b is not None:
                arrays[f"b{i}"] = b
        if hasattr(self, "scale_"):
            arrays["affine"] = np.array([self.scale_, self.offset_])
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:  # a file object: savez adds no suffix
            np.savez(fh, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> OFAAccuracyPredictor:
        """Read a file written by :meth:`save` (``allow_pickle=False``: arrays only)."""
        try:
            with np.load(path, allow_pickle=False) as z:
                if "format" not in z or str(z["format"]) != "hwnas.ofa_accuracy.v1":
                    raise ValueError("no hwnas.ofa_accuracy.v1 format tag")
                n = sum(1 for k in z.files if k.startswith("W"))
                weights = [(z[f"W{i}"], z[f"b{i}"] if f"b{i}" in z else None) for i in range(n)]
                out = cls(weights, str(z["layout"]), z["resolutions"].tolist(), float(z["base"]))
                if "affine" in z:
                    out.scale_, out.offset_ = (float(v) for v in z["affine"])
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"{path} is not a saved OFA accuracy predictor ({e})") from None
        return out


__all__ = ["OFAAccuracyPredictor"]
