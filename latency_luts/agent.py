"""``hwnas-measure``: time a measurement kit on this device; needs only the kit's engine and numpy.

    hwnas-measure KIT_DIR --device pixel7_cpu --out pixel7.csv [--engine litert --threads 1 --rounds 20 --warmup 5]

Writes the interchange format (space, arch, device, latency_ms, + spread and device profile), which
``hwnas device=remote device.name=pixel7 device.engine=litert device.csv=[pixel7.csv]`` then uses instead of
timing locally. It times with the protocol of every device (the engine's :class:`latency_luts.device.Device`, in
this process). ``--engine`` defaults to the kit's (its manifest names it); another engine is refused.

``--from-benchmark FILE.csv`` converts the timings an engine's own benchmark tool took on the device (e.g. LiteRT's
``benchmark_model`` run on each kit file) instead of timing: one row per kit file with columns ``file`` (the kit
file name, e.g. ``0003.tflite``) and one of ``latency_ms``, ``avg_ms`` or ``avg_us`` (the tool's mean inference
time; ``benchmark_model`` prints it as "Inference (avg)" in microseconds), optionally ``runs``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from latency_luts.device.base import ENGINES, Device, engine_class
from latency_luts.device.ort import OnnxRuntimeDevice
from latency_luts.kit import read_benchmark_csv, read_manifest, write_interchange_csv
from latency_luts.measure import describe_load


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hwnas-measure", description=__doc__.split("\n\n")[0])
    p.add_argument("kit", help="kit folder (manifest.json + the engine's files) written by hwnas")
    p.add_argument("--engine", default=None, help=f"engine to time with, one of {sorted(ENGINES)} (default: the kit's)")
    p.add_argument("--from-benchmark", default=None, metavar="CSV",
                   help="convert an engine benchmark tool's timings (columns file, latency_ms|avg_ms|avg_us) "
                        "instead of timing")
    p.add_argument("--device", required=True, help="name of this device in the output CSV")
    p.add_argument("--out", required=True, help="CSV to write (interchange format)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--cv-threshold", type=float, default=0.05)
    p.add_argument("--max-extra-rounds", type=int, default=40)
    p.add_argument("--graph-optimization", default="all", choices=["disable", "basic", "extended", "all"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _device(args: argparse.Namespace, man: dict, batch: int) -> Device:
    """The kit engine's device with the command line's settings; a kit of another engine is one line."""
    engine = args.engine or man["engine"]
    cls = engine_class(engine)
    if engine != man["engine"]:
        raise ValueError(f"kit {args.kit} holds {man['engine']} files ({man['models'][0]['file']}, ...), not "
                         f"{engine}'s; expected --engine {man['engine']} (or a kit written with "
                         f"device.engine={engine})")
    common = {"name": args.device, "threads": args.threads, "batch": batch, "warmup": args.warmup,
              "rounds": args.rounds, "cv_threshold": args.cv_threshold, "max_extra_rounds": args.max_extra_rounds}
    if cls is OnnxRuntimeDevice:
        return OnnxRuntimeDevice(**common, graph_optimization=args.graph_optimization)
    return cls(**common)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        kit = Path(args.kit)
        man = read_manifest(kit)
        models = man["models"]
        batches = {int(m["input_shape"][0]) for m in models}
        if len(batches) != 1:
            raise ValueError(f"kit mixes batch sizes {sorted(batches)}; expected one")
        batch = batches.pop()
        device = _device(args, man, batch)
        device.validate()
        if args.from_benchmark:
            ms = read_benchmark_csv(args.from_benchmark, models)
        else:
            ms = device.measure_here([kit / m["file"] for m in models], [m["arch"] for m in models],
                                     seed=args.seed, progress=not args.quiet)
        profile = device.profile()
        profile.pop("device")
        rows = [{"space": man["space"], "arch": m.name, "device": args.device, **{k: v for k, v in m.as_dict().items()
                 if k != "name"}} for m in ms]
        out = write_interchange_csv(args.out, rows, profile)
    except ValueError as e:
        print(f"hwnas-measure: error: {e}", file=sys.stderr)
        return 2
    note = describe_load(ms, args.threads, rerun="hwnas-measure again")
    if note:
        print(f"hwnas-measure: warning: {note}", file=sys.stderr)
    print(f"measured {len(ms)} models on {args.device}: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
