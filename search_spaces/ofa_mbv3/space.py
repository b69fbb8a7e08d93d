"""The ``ofa_mbv3`` search space: sampling, variation, encodings, supernet, extraction, LUT block keys."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from search_spaces.base import WeightSharingSpace
from search_spaces.ofa_mbv3.arch import (
    DEPTH_CHOICES,
    EXPAND_CHOICES,
    KERNEL_CHOICES,
    N_LAYERS,
    N_STAGES,
    OFAArchitecture,
)
from search_spaces.ofa_mbv3.encoding import active_mask, encode_costs, encode_onehot
from search_spaces.ofa_mbv3.structure import SETTINGS, block_specs, count_macs, count_params, widths
from search_spaces.registry import register_search_space


@register_search_space("ofa_mbv3")
class OFAMobileNetV3Space(WeightSharingSpace[OFAArchitecture]):
    """Once-for-All MobileNetV3: per-layer kernel {3,5,7} and expand {3,4,6}, depth {2,3,4}, resolution.

    ``setting="imagenet"``: stem stride 2, r in 128..224 step 4. ``setting="small"``: 32x32-class inputs,
    stem stride 1, r in 16..32 step 4. ``width_mult`` scales every width as OFA does (1.0, or 1.2 for the
    second published supernet); ``kernel_transform`` gives the supernet OFA's learned kernel-transformation
    matrices (a smaller kernel = the larger one's centre through a matrix), off = plain centre crops.
    """

    def __init__(
        self,
        setting: str = "imagenet",
        n_classes: int = 1000,
        in_channels: int = 3,
        resolutions: Sequence[int] | None = None,
        dropout: float = 0.1,
        width_mult: float = 1.0,
        kernel_transform: bool = True,
    ) -> None:
        if setting not in SETTINGS:
            raise ValueError(f"unknown ofa_mbv3 input setting {setting!r}; expected one of {sorted(SETTINGS)}")
        if int(n_classes) < 2:
            raise ValueError(f"n_classes={n_classes} is invalid; expected an integer >= 2")
        self.setting = setting
        self.n_classes = int(n_classes)
        self.in_channels = int(in_channels)
        self.dropout = float(dropout)
        if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or not 0.25 <= width_mult <= 4:
            raise ValueError(f"width_mult={width_mult!r} is invalid; expected a number in [0.25, 4] such as 1.0 or 1.2")
        self.width_mult = float(width_mult)
        self.widths = widths(self.width_mult)
        if not isinstance(kernel_transform, bool):
            raise ValueError(f"kernel_transform={kernel_transform!r} is invalid; expected true or false")
        self.kernel_transform = kernel_transform
        res = tuple(int(r) for r in (resolutions or SETTINGS[setting]["resolutions"]))
        bad = [r for r in res if r <= 0 or r % 4]
        if not res or bad:
            raise ValueError(f"resolutions {list(res)} are invalid; expected positive multiples of 4")
        self.resolutions = tuple(sorted(set(res)))

    # --- architectures -------------------------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> OFAArchitecture:
        ks = rng.choice(KERNEL_CHOICES, N_LAYERS)
        e = rng.choice(EXPAND_CHOICES, N_LAYERS)
        d = rng.choice(DEPTH_CHOICES, N_STAGES)
        r = rng.choice(self.resolutions)
        return OFAArchitecture(tuple(ks), tuple(e), tuple(d), int(r)).canonical()

    def largest(self) -> OFAArchitecture:
        return OFAArchitecture.largest(max(self.resolutions))

    def smallest(self) -> OFAArchitecture:
        return OFAArchitecture.smallest(min(self.resolutions))

    # --- progressive shrinking (OFA's schedule: elastic kernel, then depth, then expand) ---------
    PHASES = ("kernel", "depth", "expand")

    def progressive_phases(self) -> tuple[str, ...]:
        return self.PHASES

    def _phase_choices(self, phase: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(kernel, expand, depth) choices open in progressive-shrinking ``phase`` (0-based)."""
        if not 0 <= phase < len(self.PHASES):
            raise ValueError(f"progressive phase {phase} is out of range; expected 0..{len(self.PHASES) - 1}")
        depths = DEPTH_CHOICES if phase >= 1 else (max(DEPTH_CHOICES),)
        expands = EXPAND_CHOICES if phase >= 2 else (max(EXPAND_CHOICES),)
        return KERNEL_CHOICES, expands, depths

    def sample_phase(self, rng: np.random.Generator, phase: int) -> OFAArchitecture:
        """A subnet drawn from the part of the space open in progressive-shrinking ``phase``."""
        ks, es, ds = self._phase_choices(phase)
        return OFAArchitecture(
            tuple(rng.choice(ks, N_LAYERS)), tuple(rng.choice(es, N_LAYERS)), tuple(rng.choice(ds, N_STAGES)),
            int(rng.choice(self.resolutions)),
        ).canonical()

    def smallest_phase(self, phase: int) -> OFAArchitecture:
        """The smallest subnet open in progressive-shrinking ``phase`` (the sandwich's lower slice)."""
        ks, es, ds = self._phase_choices(phase)
        return OFAArchitecture((min(ks),) * N_LAYERS, (min(es),) * N_LAYERS, (min(ds),) * N_STAGES,
                               min(self.resolutions)).canonical()

    def parse(self, text: str) -> OFAArchitecture:
        arch = OFAArchitecture.from_string(text)
        if arch.r not in self.resolutions:
            raise ValueError(
                f"resolution r={arch.r} of {text!r} is outside this space's resolutions {list(self.resolutions)}"
            )
        return arch

    # --- features ------------------------------------------------------------------------------
    def encode(self, archs: Sequence[OFAArchitecture]) -> np.ndarray:
        return encode_onehot(archs, (min(self.resolutions), max(self.resolutions)))

    def cost_features(self, archs: Sequence[OFAArchitecture]) -> np.ndarray:
        """Per-stage MACs (M), total MACs (M), params (M) and resolution: good raw inputs for latency models
        (the closed-form costs of ``structure``, gathered for the whole batch from per-block tables)."""
        return encode_costs(archs, self.setting, self.resolutions, self.n_classes, self.in_channels, self.width_mult)

    def params(self, arch: OFAArchitecture) -> int:
        return count_params(arch, self.n_classes, self.in_channels, self.setting, width_mult=self.width_mult)

    def macs(self, arch: OFAArchitecture) -> int:
        return count_macs(arch, self.n_classes, self.in_channels, self.setting, width_mult=self.width_mult)

    def input_shape(self, arch: OFAArchitecture, batch: int = 1) -> tuple[int, int, int, int]:
        return (batch, self.in_channels, arch.r, arch.r)

    # --- supernet ------------------------------------------------------------------------------
    def build_supernet(self):  # noqa: ANN201 - torch imported lazily
        from search_spaces.ofa_mbv3.supernet import OFAMobileNetV3Supernet

        return OFAMobileNetV3Supernet(self.n_classes, self.in_channels, self.setting, self.dropout,
                                      width_mult=self.width_mult, kernel_transform=self.kernel_transform)

    def extract(self, supernet, arch: OFAArchitecture):  # noqa: ANN001, ANN201
        from search_spaces.ofa_mbv3.static import extract_subnet

        return extract_subnet(supernet, arch)

    def blocks(self, arch: OFAArchitecture) -> list[str]:
        W = self.widths
        specs = block_specs(arch, self.setting, width_mult=self.width_mult)
        stem = f"stem:hw{arch.r}:cin{self.in_channels}:cout{W.stem}:s{SETTINGS[self.setting]['stem_stride']}"
        head = f"head:hw{specs[-1].out_hw}:cin{W.stages[-1]}:classes{self.n_classes}"
        if (W.final_expand, W.last) != (960, 1280):  # w1.0 keys stay as they were (shipped LUTs use them)
            head += f":expand{W.final_expand}:last{W.last}"
        return [stem] + [b.key() for b in specs] + [head]

    # --- integer genome (for vectorised evolutionary operators) --------------------------------
    def describe(self) -> dict[str, Any]:
        return {"setting": self.setting, "resolutions": list(self.resolutions), "n_classes": self.n_classes,
                "in_channels": self.in_channels, "width_mult": self.width_mult,
                "kernel_transform": self.kernel_transform}

    def block_catalogue(self) -> dict[str, tuple[Any, tuple[int, ...]]]:
        """Every distinct block (stem, first block, each MBConv shape/kernel/expand, head) at every resolution."""
        from torch import nn

        from search_spaces.ofa_mbv3.static import MBConv
        from search_spaces.ofa_mbv3.supernet import FirstBlock, Head

        cat: dict[str, tuple[Any, tuple[int, ...]]] = {}
        net = self.build_supernet()
        for r in self.resolutions:
            for k in KERNEL_CHOICES:
                for e in EXPAND_CHOICES:
                    arch = OFAArchitecture((k,) * N_LAYERS, (e,) * N_LAYERS, (max(DEPTH_CHOICES),) * N_STAGES, r)
                    keys = self.blocks(arch)
                    specs = block_specs(arch, self.setting, width_mult=self.width_mult)
                    stem_key, first_key, head_key = keys[0], keys[1], keys[-1]
                    if stem_key not in cat:
                        cat[stem_key] = (net.stem, (1, self.in_channels, r, r))
                        hw = specs[0].in_hw
                        W = self.widths
                        cat[first_key] = (FirstBlock(W.stem), (1, W.stem, hw, hw))
                        fhw = specs[-1].out_hw
                        cat[head_key] = (nn.Sequential(Head(W.stages[-1], W.final_expand, W.last), net.classifier),
                                         (1, W.stages[-1], fhw, fhw))
                    for key, spec in zip(keys[2:-1], specs[1:]):
                        if key not in cat:
                            cat[key] = (MBConv(spec), (1, spec.cin, spec.in_hw, spec.in_hw))
        return cat

    def genome_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Inclusive integer bounds: 20 kernel idx, 20 expand idx, 5 depth idx, 1 resolution idx."""
        hi = [len(KERNEL_CHOICES) - 1] * N_LAYERS + [len(EXPAND_CHOICES) - 1] * N_LAYERS
        hi += [len(DEPTH_CHOICES) - 1] * N_STAGES + [len(self.resolutions) - 1]
        return np.zeros(len(hi), dtype=int), np.asarray(hi, dtype=int)

    def to_genome(self, arch: OFAArchitecture) -> np.ndarray:
        g = [KERNEL_CHOICES.index(k) for k in arch.ks] + [EXPAND_CHOICES.index(e) for e in arch.e]
        g += [DEPTH_CHOICES.index(d) for d in arch.d] + [self.resolutions.index(arch.r)]
        return np.asarray(g, dtype=int)

    def from_genome(self, g: np.ndarray) -> OFAArchitecture:
        return self.from_genomes(np.asarray(g)[None, :])[0]

    def from_genomes(self, G: np.ndarray) -> list[OFAArchitecture]:
        """Architectures of the rows of an integer genome matrix, decoded in one pass (inactive layers at the
        smallest choice, so every result is canonical)."""
        G = np.asarray(np.rint(G), dtype=np.int64).reshape(len(G), -1)
        lo, hi = self.genome_bounds()
        if G.shape[1] != len(lo) or (G < lo).any() or (G > hi).any():
            bad = G[0] if G.shape[1] != len(lo) else G[((G < lo) | (G > hi)).any(1)][0]
            raise ValueError(f"genome {bad.tolist()} is invalid; expected {len(lo)} integers within 0..{hi.tolist()}")
        d = np.asarray(DEPTH_CHOICES)[G[:, 2 * N_LAYERS : 2 * N_LAYERS + N_STAGES]]
        active = active_mask(d)
        ks = np.where(active, np.asarray(KERNEL_CHOICES)[G[:, :N_LAYERS]], KERNEL_CHOICES[0])
        e = np.where(active, np.asarray(EXPAND_CHOICES)[G[:, N_LAYERS : 2 * N_LAYERS]], EXPAND_CHOICES[0])
        r = np.asarray(self.resolutions)[G[:, -1]]
        return [OFAArchitecture.trusted(tuple(k), tuple(x), tuple(dd), rr)
                for k, x, dd, rr in zip(ks.tolist(), e.tolist(), d.tolist(), r.tolist(), strict=True)]
