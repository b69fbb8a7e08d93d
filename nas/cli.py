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
                _fail(f"unknown {group} {v!r}; expected one of {groups[group]}")


def _fail(message: str) -> None:
    print(f"hwnas: error: {message}", file=sys.stderr)
    sys.exit(2)


def _composition_error(exc: Exception, overrides: list[str]) -> str:
    """Hydra's multi-line composition report as one line naming the override and what was expected."""
    text = f"{exc}\n{exc.__cause__ or ''}"
    m = re.search(r"Could not override '([^']+)'", text)
    if m and re.search(r"not in struct|Key '[^']+' not in '", text):  # a dict node, or a typed schema's
        key = m.group(1)
        parent, _, leaf = key.rpartition(".")
        arg = next((a for a in overrides if a.split("=", 1)[0].lstrip("+~") == key), key)
        if key == "device.runtime":  # the key devices had before they were classes: say what replaced it
            from latency_luts.device import build_device

            try:
                build_device({"runtime": arg.partition("=")[2]})
            except ValueError as e:
                return str(e)
        return (f"{arg}: {leaf!r} is not a key of {parent or 'the config'}; expected one of its keys "
                f"(hwnas --cfg job lists them), or +{key}=... to add one")
    m = re.search(r"Error merging override (\S+)", text)
    t = re.search(r"of type '\w+' could not be converted to (\w+)|is not a valid (bool)", text)
    if m and t:  # the typed schema (nas/schema.py) refused the value's type
        kind = t.group(1) or "Boolean"
        want = _EXPECTED_TYPE.get(kind, kind)
        return f"{m.group(1)} is invalid; expected {want}"
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)
    return first


_EXPECTED_TYPE = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false", "String": "a string"}


def precompose(argv: list[str]) -> None:
    """Compose the config once with the command's overrides (no run): a key that does not exist or a value
    Hydra cannot parse ends in one line and exit code 2 instead of Hydra's report."""
    from hydra import compose, initialize_config_module

    overrides = [a for a in argv if not a.startswith("-")]
    try:
        with initialize_config_module(config_module=CONFIG_PACKAGE, version_base="1.3"):
            compose("config", overrides=overrides)
    except Exception as e:  # noqa: BLE001 - every composition failure is a bad command line
        _fail(_composition_error(e, overrides))


HELP = """hwnas: find the most accurate subnet that meets a latency budget on this device, and ship it as ONNX.

One run trains a weight-sharing supernet, times sampled subnets on the device, fits latency and accuracy
predictors, searches the accuracy-latency trade-off (closed loop: evaluate the most promising subnets for
real, refit, repeat), and exports the measured Pareto front to ONNX. Everything goes into one run directory
(default runs/<date>/<time>/); rerunning a command with the same hydra.run.dir resumes it. Open its
report.html in a browser to explore the results.

Stages, in order: {stages}
  stages=[train,measure]     run a prefix        force=[search,export]   rerun finished stages
  calibrate.enabled=true     few-shot latency predictor meta-trained on other devices' measurements

Config groups (group=option):
{groups}

Override any key (key=value), e.g.  hwnas train.epochs=10 search.budget=40 search.constraints.latency_ms=2
  hwnas --cfg job        the composed config        hwnas -m seed=0,1,2     multirun
  hwnas report RUN_DIR   rebuild RUN_DIR/report.html: the run as one offline page (every candidate's accuracy
                         and latency, hover for its arch and files; the front; hypervolume; stage timings)
  hwnas-bench            the benchmarks (its own config groups)
The documentation (docs/, built with: sphinx-build -b html docs site) covers the outputs and every option."""


def print_help() -> None:
    from nas.pipeline import STAGES

    groups = {g: opts for g, opts in sorted(config_groups().items()) if g not in ("bench", "hydra")}
    width = max(map(len, groups))
    lines = "\n".join(f"  {g:<{width}}  {', '.join(opts)}" for g, opts in groups.items())
    print(HELP.format(stages=" -> ".join(STAGES), groups=lines))


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
        log.info("Pareto front: %s subnets, hypervolume %.4f; see pareto.csv and report.html",
                 summary.get("n_pareto"), summary["hypervolume"])


_NO_PRECOMPOSE = {"-m", "--multirun", "--hydra-help", "-c", "--cfg", "-i", "--info", "-sc", "--shell-completion",
                  "-p", "--package", "-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir"}


REPORT_USAGE = "usage: hwnas report RUN_DIR  (rebuilds RUN_DIR/report.html from the run directory's files)"


def report_command(args: list[str]) -> None:
    """``hwnas report RUN_DIR``: rebuild the run's report.html and print its path."""
    if args in (["-h"], ["--help"]):
        print(REPORT_USAGE)
        return
    if len(args) != 1:
        _fail(f"report takes one run directory, got {len(args)} arguments {args}; {REPORT_USAGE}")
    from nas.report import write_report

    try:
        print(write_report(args[0]))
    except (ValueError, FileNotFoundError, OSError) as e:
        _fail(str(e).splitlines()[0] if str(e) else type(e).__name__)


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["report"]:  # a subcommand, before Hydra sees the command line
        report_command(argv[1:])
        return
    if "--help" in argv or "-h" in argv:
        print_help()
        return
    precheck_overrides([a for a in argv if not a.startswith("-")])
    if not _NO_PRECOMPOSE.intersection(argv) and not any(a.startswith("--") and "=" in a for a in argv):
        precompose(argv)
    _app()


if __name__ == "__main__":
    main()
