"""``hwnas-measure``: time a measurement kit on this device; needs only onnxruntime and numpy.

    hwnas-measure KIT_DIR --device pixel7_cpu --out pixel7.csv [--threads 1 --rounds 20 --warmup 5]

Writes the interchange format (space, arch, device, latency_ms, + spread and device profile), which
``hwnas device=remote device.name=pixel7 device.csv=[pixel7.csv]`` then uses instead of timing locally. It times
with the protocol of every device (:class:`latency_luts.device.OnnxRuntimeDevice`, in this process).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from latency_luts.device.ort import OnnxRuntimeDevice
from latency_luts.kit import read_manifest, write_interchange_csv
from latency_luts.measure import describe_load


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hwnas-measure", description=__doc__.split("\n\n")[0])
    p.add_argument("kit", help="kit folder (manifest.json + *.onnx) written by hwnas")
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
        device = OnnxRuntimeDevice(name=args.device, threads=args.threads, batch=batch, warmup=args.warmup,
                                   rounds=args.rounds, cv_threshold=args.cv_threshold,
                                   max_extra_rounds=args.max_extra_rounds, graph_optimization=args.graph_optimization)
        device.validate()
        ms = device.measure_here([kit / m["file"] for m in models], [m["arch"] for m in models], seed=args.seed,
                                 progress=not args.quiet)
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
