"""What a user reads: the README stays one screen with its two CI blocks, the documentation site builds with
every warning an error, the config-group table matches ``conf/``, and every ``hwnas``/``hwnas-bench`` command in
the README and the docs composes (no unknown key, option or value type) or says what it needs; the README's
one-liners run, here or in the test named beside them."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
GENERATED = {"results.md", "history.md"}  # written by hwnas-bench report / records of past runs, not instructions

# The README's common tasks and where each runs at smoke size (the tests named here run the same overrides).
README_TASKS_RUN_BY = {
    "data=image_folder": "tests/test_docs.py::test_readme_own_data_one_liner_runs",
    "device=openvino": "tests/nas/test_pipeline_engines.py::test_every_stage_measures_and_delivers_with_the_runs_engine",
    "device=remote": "tests/nas/test_pipeline.py::test_remote_device_round_trip_through_a_kit",
    "experiment=ofa_pretrained": "tests/nas/test_ofa_pretrained.py::test_ofa_pretrained_runs_every_stage_on_a_published_supernet",
    "hydra.run.dir=runs/w search=optuna": "tests/nas/test_workers.py::test_three_workers_share_one_study",
    "search.strategy.sampler=tpe": "tests/nas/test_search_stage.py::test_killed_optuna_search_repeats_no_evaluation_and_same_seed_repeats_itself",
    "search.constraints.latency_ms=": "tests/nas/test_search_stage.py::test_closed_loop_with_latency_constraint",
}


def _fences(text: str) -> list[str]:
    """The bodies of the ```bash fences of a Markdown text."""
    return re.findall(r"^```(?:bash|sh)\n(.*?)^```", text, flags=re.S | re.M)


def documented_commands() -> list[tuple[str, str, str]]:
    """(file, command, its trailing comment) for every hwnas / hwnas-bench command in a bash block of the README
    or the docs; continuation lines joined, loops and torchrun reduced to the hwnas arguments."""
    files = [ROOT / "README.md", *sorted(p for p in DOCS.rglob("*.md") if p.name not in GENERATED)]
    out = []
    for f in files:
        for body in _fences(f.read_text()):
            for line in body.replace("\\\n", " ").splitlines():
                cmd, _, comment = line.partition(" #")
                cmd = cmd.strip()
                m = re.search(r"(?:^|do |; |&& )((?:hwnas|hwnas-bench) .*?)(?: &|;|$)", cmd)
                t = re.search(r"torchrun .*?-m nas\.cli (.*)$", cmd)
                if t:
                    out.append((f.relative_to(ROOT).as_posix(), "hwnas " + t.group(1), comment))
                elif m and m.group(1).startswith("hwnas report "):
                    continue  # a subcommand, not Hydra settings: tests/nas/test_report_html.py runs it
                elif m and not cmd.startswith("#"):
                    out.append((f.relative_to(ROOT).as_posix(), m.group(1).strip(), comment))
    return out


def _overrides(cmd: str) -> tuple[str, list[str]]:
    """(config name, overrides) Hydra composes for a documented command; a multirun sweep takes its first value."""
    args = [a.replace("=~/", f"={Path.home()}/", 1) for a in shlex.split(cmd)]  # bash expands ~ after key=
    prog, args = args[0], args[1:]
    sweep = "-m" in args
    over = []
    for a in args:
        if a.startswith("-") or a.startswith(("hydra.", "hydra/")):
            continue  # Hydra's own flags and settings (run dir, launcher): not the app's config
        if sweep:
            key, _, val = a.partition("=")
            if val.startswith("range("):
                val = val[len("range("):].split(",")[0].rstrip(")")
                val = "0" if val.isdigit() else val
            elif "," in val and not val.startswith("["):
                val = val.split(",")[0]
            a = f"{key}={val}"
        over.append(a)
    return ("bench_config" if prog == "hwnas-bench" else "config"), over


COMMANDS = documented_commands()


def test_the_docs_show_commands() -> None:
    """The extraction finds the commands (a broken regex would make the compose test vacuous)."""
    files = {f for f, _, _ in COMMANDS}
    assert len(COMMANDS) >= 45, len(COMMANDS)
    assert {"README.md", "docs/getting-started.md", "docs/guides/device.md", "docs/guides/scale-out.md"} <= files


@pytest.mark.parametrize(("file", "cmd", "comment"), COMMANDS, ids=[f"{f}:{c[:60]}" for f, c, _ in COMMANDS])
def test_documented_command_composes(file: str, cmd: str, comment: str) -> None:
    """Every documented command's overrides compose against the shipped configs: a renamed key, a removed
    option or a value of the wrong type in the docs fails here."""
    from hydra import compose, initialize_config_module

    from nas.cli import precheck_overrides

    name, over = _overrides(cmd)
    precheck_overrides(over)  # exits with the one-line error on an unknown group option
    with initialize_config_module(config_module="nas.conf", version_base="1.3"):
        compose(name, overrides=over)


def test_readme_is_one_screen_with_its_ci_blocks() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200, len(text.splitlines())
    for marker in ("<!-- ci:main -->", "<!-- ci:test -->"):
        after = text.split(marker, 1)[1]
        block = _fences(after)[0].strip()
        assert block.startswith("python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0"), block
    main = _fences(text.split("<!-- ci:main -->", 1)[1])[0]
    assert main.strip().endswith("&& hwnas"), main


def test_readme_links_point_at_files() -> None:
    text = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    assert len(links) >= 15
    missing = [lk for lk in links if not lk.startswith("http") and not (ROOT / lk).exists()]
    assert not missing, missing


def test_readme_tasks_are_run_by_a_test() -> None:
    """Each one-liner of the README's common tasks runs at smoke size in the test named for it, or says what it
    needs (ImageNet and a published supernet, a GPU, a cluster)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Common tasks", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in _fences(section)[0].splitlines() if ln.strip()]
    assert len(lines) >= 5
    for line in lines:
        keys = [k for k in README_TASKS_RUN_BY if all(part in line for part in k.split())]
        assert keys, f"README task without a test that runs it: {line}"
        for k in keys:
            target = README_TASKS_RUN_BY[k]
            path, _, func = target.partition("::")
            source = (ROOT / path).read_text()
            assert f"def {func}(" in source, (k, target)


def test_config_group_table_matches_conf() -> None:
    from nas.cli import config_groups

    text = (DOCS / "concepts" / "stages.md").read_text()
    table = text.split("<!-- config-groups:begin", 1)[1].split("<!-- config-groups:end", 1)[0]
    rows = {m.group(1): re.findall(r"`([^`]+)`", m.group(2))
            for m in re.finditer(r"^\| `(\w+)` \| (.*) \|$", table, flags=re.M)}
    want = {g: opts for g, opts in config_groups().items() if g not in ("bench", "hydra")}
    assert rows == want


def test_python_examples_run(tmp_path: Path) -> None:
    """The spaces page's example runs as printed."""
    code = _python_blocks(DOCS / "concepts" / "spaces.md")[0]
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    params, macs = proc.stdout.split()[:2]
    assert int(params) > 10_000 and int(macs) > 100_000, proc.stdout


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.S | re.M)


def _image_folder(root: Path, classes: int = 3, per_class: int = 16) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        d = root / f"class{c}"
        d.mkdir(parents=True)
        for i in range(per_class):  # a class is a colour: learnable from 16x16 images in a smoke run
            img = np.clip(rng.normal(60 + 70 * c, 25, size=(20, 20, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(d / f"{i}.png")
    return root


@pytest.mark.slow
def test_readme_own_data_one_liner_runs(tmp_path: Path) -> None:
    """The README's "your own data" line at smoke size on an image folder written here; then the getting-started
    page's pareto.csv example reads its front."""
    text = (ROOT / "README.md").read_text()
    line = next(ln for ln in _fences(text.split("## Common tasks", 1)[1])[0].splitlines() if "data=image_folder" in ln)
    cmd = line.partition(" #")[0].replace("/path/to/images", str(_image_folder(tmp_path / "images")))
    cmd = cmd.replace("data.image_size=64", "data.image_size=16")  # smoke size
    run = tmp_path / "run"
    args = shlex.split(cmd)[1:] + ["experiment=smoke", "threads=1", f"hydra.run.dir={run}"]
    proc = subprocess.run([shutil.which("hwnas") or "hwnas", *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "pareto.csv").is_file() and (run / "report.html").is_file()

    code = _python_blocks(DOCS / "getting-started.md")[0]
    code = code.replace("runs/mine", str(run)).replace("<= 1.0", "<= 1e9")  # this run's front, any latency
    code = code.replace("n_classes=10, in_channels=1", "n_classes=3, in_channels=3")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import pandas as pd

    front = pd.read_csv(run / "pareto.csv")
    best = front.loc[front.val_accuracy.idxmax()]
    assert best.arch in proc.stdout and best.artefact_path in proc.stdout, proc.stdout


@pytest.mark.slow
def test_site_builds_with_warnings_as_errors(tmp_path: Path) -> None:
    """``sphinx-build -W``: a broken link or anchor, a page outside the contents, a missing API name or a
    malformed docstring fails the build."""
    if shutil.which("sphinx-build") is None:
        pytest.skip('needs the docs extra: pip install -e ".[docs]"')
    proc = subprocess.run(["sphinx-build", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(tmp_path / "site")],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-5000:])
    html = (tmp_path / "site" / "reference" / "predictors.html").read_text()
    assert "FewShotLatencyPredictor" in html and "adapt" in html  # the API reference is filled from docstrings
    assert (tmp_path / "site" / "notebooks" / "pareto_analysis.html").is_file()


def test_the_rendered_notebook_shows_one_top_to_bottom_run() -> None:
    """The site renders the notebook as committed: its outputs are of one run from the first cell to the last
    (execution counts 1..n in order, no error output) with its figures, so a reader sees what a run gives."""
    import json

    nb = json.loads((ROOT / "experiments" / "pareto_analysis.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert [c["execution_count"] for c in code] == list(range(1, len(code) + 1)), \
        "re-run the notebook top to bottom before committing it (docs/guides/report.md says how)"
    outputs = [o for c in code for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2  # the fronts and the hypervolume
