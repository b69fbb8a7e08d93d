"""``hwnas-bench``: benchmarks as a Hydra app (``bench=NAME``); each writes one JSON (with a ``provenance`` block:
:mod:`nas.bench.provenance`) and prints a table. ``hwnas-bench report [--check]`` (:mod:`nas.bench.report`, a
plain subcommand before Hydra) regenerates ``docs/results.md`` and the README's headline table from the JSONs."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from nas.bench.provenance import Recorder
from nas.cli import precheck_overrides

BENCHES = {
    "quickstart": "nas.bench.quickstart",
    "latency_fewshot": "nas.bench.latency_fewshot",
    "lut_accuracy": "nas.bench.lut_accuracy",
    "latency_cpu_calibration": "nas.bench.latency_cpu_calibration",
    "supernet_overhead": "nas.bench.supernet_overhead",
    "search_nb201": "nas.bench.search_nb201",
    "search_supernet": "nas.bench.search_supernet",
    "supernet_ranking": "nas.bench.supernet_ranking",
    "accuracy_predictor": "nas.bench.accuracy_predictor",
    "inner_search": "nas.bench.inner_search",
    "scaling": "nas.bench.scaling",
    "workers": "nas.bench.workers",
    "ofa_import": "nas.bench.ofa_import",
    "engines": "nas.bench.engines",
}


def _print_table(result: dict) -> None:
    flat = {k: v for k, v in result.items() if not isinstance(v, dict | list)}
    width = max((len(k) for k in flat), default=0)
    for k, v in flat.items():
        print(f"{k:<{width}}  {v:.4g}" if isinstance(v, float) else f"{k:<{width}}  {v}")


@hydra.main(config_path="pkg://nas.conf", config_name="bench_config", version_base="1.3")
def _app(cfg: DictConfig) -> None:
    name = cfg.bench.name
    if name not in BENCHES:
        print(f"hwnas-bench: error: unknown bench {name!r}; expected one of {sorted(BENCHES)}", file=sys.stderr)
        sys.exit(2)
    bcfg = cfg.bench
    if bcfg.get("out") is None:
        OmegaConf.set_struct(bcfg, False)
        bcfg.out = str(Path(HydraConfig.get().runtime.output_dir) / f"{name}.json")
    recorder = Recorder()
    try:
        result = importlib.import_module(BENCHES[name]).run(bcfg)
    except (ValueError, FileNotFoundError) as e:
        print(f"hwnas-bench: error: {e}", file=sys.stderr)
        sys.exit(2)
    recorder.stamp(bcfg.out)
    if name not in ("latency_fewshot", "latency_cpu_calibration", "supernet_overhead", "accuracy_predictor",
                    "inner_search", "scaling", "search_supernet", "ofa_import", "engines"):  # own tables
        _print_table(result)
    print(f"result: {bcfg.out}")


def main() -> None:
    if sys.argv[1:2] == ["report"]:
        sys.exit(importlib.import_module("nas.bench.report").main(sys.argv[2:]))
    precheck_overrides([a for a in sys.argv[1:] if not a.startswith("-")])
    _app()


if __name__ == "__main__":
    main()
