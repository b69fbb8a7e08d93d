"""Once-for-All MobileNetV3 architectures and their canonical ``ofa_mbv3`` strings.

``ks=<20 ints>;e=<20 ints>;d=<5 ints>;r=<int>``: layer i of stage s is entry ``s*4+i``; only the first
``d[s]`` layers of a stage are active. Entries of inactive layers are kept (so strings round-trip) but ignored
by equality and hashing: two strings that differ only there are the same network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

N_STAGES = 5
MAX_DEPTH = 4
N_LAYERS = N_STAGES * MAX_DEPTH
KERNEL_CHOICES = (3, 5, 7)
EXPAND_CHOICES = (3, 4, 6)
DEPTH_CHOICES = (2, 3, 4)
IMAGENET_RESOLUTIONS = tuple(range(128, 225, 4))
SMALL_RESOLUTIONS = (16, 20, 24, 28, 32)

_PART = re.compile(r"^(ks|e|d|r)=([0-9,]+)$")


@dataclass(frozen=True, eq=False)
class OFAArchitecture:
    """One subnet of the OFA-MobileNetV3 space (per-layer kernel and expand, per-stage depth, resolution)."""

    ks: tuple[int, ...]
    e: tuple[int, ...]
    d: tuple[int, ...]
    r: int
    _key: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ks", tuple(int(v) for v in self.ks))
        object.__setattr__(self, "e", tuple(int(v) for v in self.e))
        object.__setattr__(self, "d", tuple(int(v) for v in self.d))
        object.__setattr__(self, "r", int(self.r))
        if len(self.ks) != N_LAYERS or len(self.e) != N_LAYERS:
            raise ValueError(
                f"ofa_mbv3 arch needs {N_LAYERS} kernel and expand entries, got ks={len(self.ks)} e={len(self.e)}"
            )
        if len(self.d) != N_STAGES:
            raise ValueError(f"ofa_mbv3 arch needs {N_STAGES} depths, got d={list(self.d)}")
        for name, vals, ok in (("ks", self.ks, KERNEL_CHOICES), ("e", self.e, EXPAND_CHOICES), ("d", self.d, DEPTH_CHOICES)):
            bad = [v for v in vals if v not in ok]
            if bad:
                raise ValueError(f"ofa_mbv3 {name} value {bad[0]} is invalid; expected one of {list(ok)}")
        if self.r <= 0 or self.r % 4:
            raise ValueError(f"ofa_mbv3 resolution r={self.r} is invalid; expected a positive multiple of 4")
        active = tuple((self.ks[i], self.e[i]) for i in self.active_layers())
        object.__setattr__(self, "_key", (active, self.d, self.r))

    @classmethod
    def trusted(cls, ks: tuple[int, ...], e: tuple[int, ...], d: tuple[int, ...], r: int) -> OFAArchitecture:
        """An architecture from tuples of plain ints already known to be valid choices (a space's genome
        decoder), without the checks of the constructor: the inner search builds thousands per second."""
        self = object.__new__(cls)
        for name, val in (("ks", ks), ("e", e), ("d", d), ("r", r)):
            object.__setattr__(self, name, val)
        active = tuple((ks[s * MAX_DEPTH + i], e[s * MAX_DEPTH + i]) for s in range(N_STAGES) for i in range(d[s]))
        object.__setattr__(self, "_key", (active, d, r))
        return self

    # --- identity -------------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        return isinstance(other, OFAArchitecture) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def active_layers(self) -> list[int]:
        """Flat indices (s*4+i) of active layers, in network order."""
        return [s * MAX_DEPTH + i for s in range(N_STAGES) for i in range(self.d[s])]

    def canonical(self) -> OFAArchitecture:
        """Same network with inactive entries set to the smallest choice (a unique string per network)."""
        act = set(self.active_layers())
        ks = tuple(k if i in act else KERNEL_CHOICES[0] for i, k in enumerate(self.ks))
        e = tuple(v if i in act else EXPAND_CHOICES[0] for i, v in enumerate(self.e))
        return OFAArchitecture(ks, e, self.d, self.r)

    # --- strings --------------------------------------------------------------------------------
    def to_string(self) -> str:
        j = lambda v: ",".join(str(x) for x in v)  # noqa: E731
        return f"ks={j(self.ks)};e={j(self.e)};d={j(self.d)};r={self.r}"

    def __str__(self) -> str:
        return self.to_string()

    @classmethod
    def from_string(cls, text: str) -> OFAArchitecture:
        parts: dict[str, list[int]] = {}
        for chunk in str(text).strip().split(";"):
            m = _PART.match(chunk.strip())
            if not m:
                raise ValueError(f"bad ofa_mbv3 arch part {chunk!r} in {text!r}; expected ks=..;e=..;d=..;r=..")
            parts[m.group(1)] = [int(v) for v in m.group(2).split(",") if v]
        missing = {"ks", "e", "d", "r"} - set(parts)
        if missing:
            raise ValueError(f"ofa_mbv3 arch {text!r} lacks {sorted(missing)}; expected ks=..;e=..;d=..;r=..")
        if len(parts["r"]) != 1:
            raise ValueError(f"ofa_mbv3 arch {text!r} has r={parts['r']}; expected one integer")
        return cls(tuple(parts["ks"]), tuple(parts["e"]), tuple(parts["d"]), parts["r"][0])

    # --- convenience ----------------------------------------------------------------------------
    @classmethod
    def largest(cls, r: int = 224) -> OFAArchitecture:
        return cls((7,) * N_LAYERS, (6,) * N_LAYERS, (4,) * N_STAGES, r)

    @classmethod
    def smallest(cls, r: int = 128) -> OFAArchitecture:
        return cls((3,) * N_LAYERS, (3,) * N_LAYERS, (2,) * N_STAGES, r)
