"""``hwnas``: the pipeline as a Hydra app. ``main(cfg)`` only calls the pipeline."""

from __future__ import annotations

import logging
import re
import sys
from importlib import resources

import hydra
from omegaconf import DictConfig

from nas.pipeline import run_pipeline

log = logging.getLogger("nas")
CONFIG_PACKAGE = "nas.conf"
_GROUP_OVERRIDE = re.compile(r"^[+~]{0,2}([a-z_]+)=(.*)$")


def config_groups() -> dict[str, list[str]]:
    """Config group -> its option names, read from the installed config package."""
    root = resources.files(CONFIG_PACKAGE)
    out = {}
    for entry in root.iterdir():
        if entry.is_dir() and not entry.name.startswith(("_", ".")):
            out[entry.name] = sorted(p.name[:-5] for p in entry.iterdir() if p.name.endswith(".yaml"))
    return out


def precheck_overrides(argv: list[str]) -> None:
    """One-line error for an unknown config-group option, before Hydra's multi-line report."""
    groups = config_groups()
    for arg in argv:
        m = _GROUP_OVERRIDE.match(arg)
        if not m or m.group(1) not in groups:
            continue
        group, value = m.group(1), m.group(2)
        for v in value.split(","):  # multirun sweeps: a,b,c
            if v and v != "null" and v not in groups[group]:
                print(f"hwnas: error: unknown {group} {v!r}; expected one of {groups[group]}", file=sys.stderr)
                sys.exit(2)


@hydra.main(config_path=f"pkg://{CONFIG_PACKAGE}", config_name="config", version_base="1.3")
def _app(cfg: DictConfig) -> None:
    from nas.stages.common import NeedsMeasurement
    from nas.training import TrainingPaused

    try:
        summary = run_pipeline(cfg)
    except NeedsMeasurement as e:
        print(f"hwnas: waiting for device measurements: {e}", file=sys.stderr)
        sys.exit(3)
    except TrainingPaused as e:
        print(f"hwnas: {e}", file=sys.stderr)
        sys.exit(4)
    except (ValueError, FileNotFoundError) as e:
        print(f"hwnas: error: {e}", file=sys.stderr)
        sys.exit(2)
    if "rank" in summary:  # a helper rank of a torchrun job: rank 0 reports
        return
    log.info("run directory: %s", summary["run_dir"])
    if "hypervolume" in summary:
        log.info("Pareto front: %s subnets, hypervolume %.4f; see pareto.csv and pareto.png",
                 summary.get("n_pareto"), summary["hypervolume"])


def main() -> None:
    precheck_overrides([a for a in sys.argv[1:] if not a.startswith("-")])
    _app()


if __name__ == "__main__":
    main()
