"""Views of an architecture for the few-shot latency predictor: as written, or as a deployment compiler runs it.

Exporters and inference engines (ONNX, TFLite, OpenVINO, TensorRT) drop operations whose result never reaches
the network's output; PyTorch eager runs every operation it is given. Which of the two a device's latencies
follow is a property of its software stack, not of its hardware, so the source devices' latencies cannot
tell: on HELP's NB201 devices a cell with dead edges is ~1.2-1.4x slower than the same cell with those edges
removed (GPUs and most CPUs timed in PyTorch), on nn-Meter's four devices it is as fast (ratio 1.00), and
HELP's pixel3 and raspi4 are in between. The predictor keeps both views and lets the target's own
measurements choose (the marginal likelihood of its model average under each view; docs/benchmarks/latency_fewshot.md).

The ``live`` view maps an architecture to the architecture a compiler would run: the same string with the
operation of every dead edge replaced by ``none``. Only spaces with branching cells have dead code; for the
chain-structured spaces (fbnet, ofa_mbv3) the view does not apply (``None``), and the predictor keeps one view.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

from search_spaces.nb201.arch import EDGES, N_NODES, NB201Architecture

VIEWS = ("asis", "live")


def nb201_live(text: str) -> str | None:
    """The NB201 cell with its dead edges set to ``none`` (an edge is dead when its to-node cannot reach the
    output node through non-``none`` edges); ``None`` when ``text`` is not an NB201 cell string."""
    try:
        arch = NB201Architecture.from_string(text)
    except ValueError:
        return None
    live = {N_NODES - 1}
    for node in range(N_NODES - 2, -1, -1):
        if any(op != "none" and frm == node and to in live for (to, frm), op in zip(EDGES, arch.ops, strict=True)):
            live.add(node)
    ops = tuple(op if to in live else "none" for (to, _), op in zip(EDGES, arch.ops, strict=True))
    return NB201Architecture(ops).to_string()


LIVE_FORMS: tuple[Callable[[str], str | None], ...] = (nb201_live,)  # one per space with dead code


@functools.lru_cache(maxsize=1 << 17)
def live_form(key: str) -> str:
    """The ``live`` view of one canonical arch string (itself where no space's rule applies); remembered, as a
    search asks about the same candidates every round."""
    for rule in LIVE_FORMS:
        out = rule(key)
        if out is not None:
            return out
    return key


def view_keys(keys: Sequence[str], view: str) -> list[str]:
    """Canonical strings of ``keys`` under ``view`` (``asis``: unchanged)."""
    if view not in VIEWS:
        raise ValueError(f"view {view!r} is invalid; expected one of {list(VIEWS)}")
    return list(keys) if view == "asis" else [live_form(k) for k in keys]
