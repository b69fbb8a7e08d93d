"""The latency measurement protocol (:func:`time_interleaved`, the same for every engine) and its onnxruntime
harness (:func:`measure_onnx_models`, what the kit agent runs). Devices (:mod:`latency_luts.device`) time through it.

Protocol (designed for noisy shared CPUs): every model is loaded into one process, warmed up, then timed in
interleaved rounds — each round runs every model once in a fresh random order — so drift hits all models
alike. The estimate is the minimum over rounds (the least-disturbed run); median, p10, p90 and the
coefficient of variation are stored beside it. Models whose CV exceeds ``cv_threshold`` get more rounds.
Each pass also records how loaded the machine was while it timed (:mod:`latency_luts.load`): the CPUs other
processes used (``other_cpus``), the drift between its earlier and later rounds (``drift``), and a ``load``
flag per row, so a number taken on a busy machine says so instead of passing for a clean one.
Needs only onnxruntime and numpy, so it runs on devices without torch.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from latency_luts.load import LoadMeter, load_flags, machine_cpus

log = logging.getLogger(__name__)


@dataclass
class Measurement:
    """One model's timing on one device; all times in milliseconds."""

    name: str
    latency_ms: float  # the estimate: minimum over rounds
    median_ms: float
    p10_ms: float
    p90_ms: float
    cv: float  # std / mean over rounds
    runs: int
    warmup: int
    other_cpus: float = float("nan")  # CPUs other processes used on average while the pass timed (nan: unknown)
    drift: float = 1.0  # the pass's drift: median over models of (median of later rounds / of earlier rounds)
    load: str = "ok"  # ok | ;-joined busy, drift, noisy (latency_luts.load.load_flags)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class OrtSettings:
    threads: int = 1
    graph_optimization: str = "all"  # disable | basic | extended | all
    execution_mode: str = "sequential"  # sequential | parallel
    spinning: bool = False

    def __post_init__(self) -> None:
        if int(self.threads) < 1:
            raise ValueError(f"threads={self.threads} is invalid; expected >= 1")
        if self.graph_optimization not in ("disable", "basic", "extended", "all"):
            raise ValueError(
                f"graph_optimization={self.graph_optimization!r} is invalid; expected disable|basic|extended|all"
            )
        if self.execution_mode not in ("sequential", "parallel"):
            raise ValueError(f"execution_mode={self.execution_mode!r} is invalid; expected sequential|parallel")


def make_session(path: str | Path, settings: OrtSettings):  # noqa: ANN201
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(settings.threads)
    so.inter_op_num_threads = 1
    so.execution_mode = (
        ort.ExecutionMode.ORT_SEQUENTIAL if settings.execution_mode == "sequential" else ort.ExecutionMode.ORT_PARALLEL
    )
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[settings.graph_optimization]
    spin = "1" if settings.spinning else "0"
    so.add_session_config_entry("session.intra_op.allow_spinning", spin)
    so.add_session_config_entry("session.inter_op.allow_spinning", spin)
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types (InvalidProtobuf, Fail, ...)
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"ONNX file {str(path)!r} does not load in onnxruntime ({reason}); expected an ONNX "
                         "model (re-export it, or copy the kit again)") from None


def _input_feed(sess, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:  # noqa: ANN001
    feed = {}
    for inp in sess.get_inputs():
        shape = [batch if not isinstance(d, int) else d for d in inp.shape]
        feed[inp.name] = rng.standard_normal(shape).astype(np.float32)
    return feed


def _progress(it: range, desc: str, enabled: bool):  # noqa: ANN202
    """tqdm when installed (it is optional on measurement devices)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - the remote agent may run without tqdm
        return it
    return tqdm(it, desc=desc, unit="round", leave=False, disable=not enabled)


def _stats(name: str, t: np.ndarray, warmup: int, other_cpus: float | None, drift: float | None) -> Measurement:
    cv = float(t.std() / t.mean()) if t.mean() > 0 else 0.0
    return Measurement(
        name=name,
        latency_ms=float(t.min()),
        median_ms=float(np.median(t)),
        p10_ms=float(np.percentile(t, 10)),
        p90_ms=float(np.percentile(t, 90)),
        cv=cv,
        runs=int(t.size),
        warmup=warmup,
        other_cpus=float("nan") if other_cpus is None else round(other_cpus, 3),
        drift=1.0 if drift is None else round(drift, 4),
        load=load_flags(other_cpus, drift, cv),
    )


def _pass_drift(times: list[list[float]], rounds: int) -> float | None:
    """Median over models of (median of the later half / median of the earlier half) of the first ``rounds``
    interleaved rounds: every model ran in every round, so a machine that got busier or quieter moves them all."""
    if rounds < 4:
        return None
    h = rounds // 2
    ratios = [np.median(t[h:rounds]) / np.median(t[:h]) for t in times if np.median(t[:h]) > 0]
    return float(np.median(ratios)) if ratios else None


def describe_load(ms: Sequence[Measurement], threads: int, rerun: str = "hwnas ... force=[measure]") -> str | None:
    """One warning sentence when a pass was timed on a loaded machine (flag busy or drift), else None;
    ``rerun`` is the command that times again."""
    if not ms or all("busy" not in m.load and "drift" not in m.load for m in ms):
        return None
    m = ms[0]
    other = "unknown" if np.isnan(m.other_cpus) else f"{m.other_cpus:.1f}"
    return (f"timing pass of {len(ms)} models ran on a loaded machine: other processes used {other} of "
            f"{machine_cpus()} CPUs ({threads} timing thread(s)), later rounds ran x{m.drift:.2f} the earlier "
            "ones; the rows are flagged in the 'load' column. For clean latencies rerun the timing when the "
            f"machine is idle ({rerun})")


def time_interleaved(
    runs: Sequence[Callable[[], object]],
    names: Sequence[str],
    rng: np.random.Generator,
    warmup: int = 5,
    rounds: int = 20,
    cv_threshold: float = 0.05,
    max_extra_rounds: int = 40,
    progress: bool = True,
) -> list[Measurement]:
    """The protocol, for any engine: ``runs[i]()`` runs model i once on its fixed input. Every model is warmed
    up, then timed in interleaved rounds (each round runs every model once in a fresh random order); models
    whose CV exceeds ``cv_threshold`` get ``max_extra_rounds`` more; one Measurement each (minimum, spread,
    load flags)."""
    if not runs:
        raise ValueError("no models given to measure; expected at least one")
    if warmup < 0 or rounds < 1:
        raise ValueError(f"warmup={warmup}, rounds={rounds} are invalid; expected warmup >= 0 and rounds >= 1")
    for run in runs:
        for _ in range(warmup):
            run()
    times: list[list[float]] = [[] for _ in runs]
    meter = LoadMeter()

    def run_rounds(idx: list[int], n: int, desc: str) -> None:
        for _ in _progress(range(n), desc, progress):
            for i in rng.permutation(idx):
                t0 = time.perf_counter_ns()
                runs[i]()
                times[i].append((time.perf_counter_ns() - t0) / 1e6)

    run_rounds(list(range(len(runs))), rounds, f"measure {len(runs)} models")
    noisy = [i for i, t in enumerate(times) if np.std(t) / np.mean(t) > cv_threshold]
    if noisy and max_extra_rounds > 0:
        log.info("%d of %d models have CV > %.2f: %d more rounds for them", len(noisy), len(runs),
                 cv_threshold, max_extra_rounds)
        run_rounds(noisy, max_extra_rounds, f"re-measure {len(noisy)} noisy models")
    other, drift = meter.other_cpus(), _pass_drift(times, rounds)
    return [_stats(n, np.asarray(t), warmup, other, drift) for n, t in zip(names, times)]


def measure_onnx_models(
    paths: Sequence[str | Path],
    settings: OrtSettings | None = None,
    warmup: int = 5,
    rounds: int = 20,
    batch: int = 1,
    cv_threshold: float = 0.05,
    max_extra_rounds: int = 40,
    seed: int = 0,
    names: Sequence[str] | None = None,
    progress: bool = True,
) -> list[Measurement]:
    """Time every ONNX model in ``paths`` in this process with the interleaved-rounds protocol
    (:func:`time_interleaved`); one Measurement each. Only onnxruntime and numpy: the kit agent's path."""
    if not paths:
        raise ValueError("no ONNX models given to measure; expected at least one path")
    if warmup < 0 or rounds < 1:
        raise ValueError(f"warmup={warmup}, rounds={rounds} are invalid; expected warmup >= 0 and rounds >= 1")
    settings = settings or OrtSettings()
    names = list(names) if names is not None else [Path(p).stem for p in paths]
    rng = np.random.default_rng(seed)
    sessions = [make_session(p, settings) for p in paths]
    feeds = [_input_feed(s, batch, rng) for s in sessions]
    runs = [functools.partial(s.run, None, f) for s, f in zip(sessions, feeds)]
    return time_interleaved(runs, names, rng, warmup=warmup, rounds=rounds, cv_threshold=cv_threshold,
                            max_extra_rounds=max_extra_rounds, progress=progress)
