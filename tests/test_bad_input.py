"""The bad-input catalogue (docs/bad-input.md, "When the input is wrong"): every entry is a real ``hwnas`` (or
``hwnas-measure``) command in a fresh process. Each must end with exit code 2 and one stderr line that names the
bad value and what was expected, and must leave the run directory it was pointed at as it was: an earlier run's
results untouched, nothing half-written beside them.

The docs' table is checked against :data:`CATALOGUE`, so the table cannot list a case no test runs.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
REMOTE = "device=remote device.name=pi5"
OFA = "experiment=ofa_pretrained data.root={files}/imagenet_like"

# (docs/bad-input.md row, command-line arguments with {files} for the bad files this module writes, fragment of the error)
CATALOGUE: list[tuple[str, str, str]] = [
    ("unknown search space", "search_space=nope", "unknown search_space 'nope'; expected one of"),
    ("unknown search space name", "search_space.name=nope", "unknown search space 'nope'"),
    ("unknown device", "device=nope", "unknown device 'nope'; expected one of"),
    ("unknown strategy", "search=nope", "unknown search 'nope'; expected one of"),
    ("unknown data", "data=nope", "unknown data 'nope'; expected one of"),
    ("unknown stage", "stages=[train,tune]", "stages contains 'tune'; expected names from"),
    ("unknown key", "data.val_fraction=1.5", "'val_fraction' is not a key of data"),
    ("unknown device key", "device.spin=true", "'spin' is not a key of device"),
    ("old device runtime key", "device.runtime=remote", "device.runtime='remote' is no longer a setting"),
    ("unparsable override", "stages=[train", "hwnas: error:"),
    ("zero budget", "search.budget=0", "search.budget=0 is invalid"),
    ("negative budget", "search.budget=-5", "search.budget=-5 is invalid"),
    ("zero count", "measure.n_archs=0", "measure.n_archs=0 is invalid"),
    ("zero calibration budget", "calibrate.enabled=true calibrate.budget=0", "calibrate.budget=0 is invalid"),
    ("zero epochs", "train.epochs=0", "train.epochs=0 is invalid; expected a positive integer"),
    ("zero timing rounds", "device.rounds=0", "device.rounds=0 is invalid; expected a positive integer"),
    ("device: unknown precision", "device.precision=fp16",
     "device.precision='fp16' is invalid; expected one of ['fp32', 'int8']"),
    ("device: fractional batch", "device.batch=2.5", "device.batch=2.5 is invalid; expected an integer"),
    ("device: class that is not a device", "device._target_=os.system",
     "device._target_='os.system' is invalid: it is not a concrete Device class"),
    ("zero threads", "threads=0", "threads=0 is invalid; expected auto or a positive integer"),
    ("negative seed", "seed=-3", "seed=-3 is invalid; expected an integer >= 0"),
    ("negative worker index", "worker=-1", "worker=-1 is invalid; expected an integer >= 0"),
    ("fractional integer", "seed=1.5", "seed=1.5 is invalid; expected an integer"),
    ("fractional count", "measure.n_archs=2.5", "measure.n_archs=2.5 is invalid; expected an integer"),
    ("non-numeric integer", "train.epochs=ten", "train.epochs=ten is invalid; expected an integer"),
    ("non-numeric bound", "search.constraints.latency_ms=fast",
     "search.constraints.latency_ms=fast is invalid; expected a number"),
    ("non-boolean flag", "train.progressive=maybe", "train.progressive=maybe is invalid; expected true or false"),
    ("unknown predictor kind", "predictor.accuracy.kind=forest", "unknown regressor kind 'forest'; expected one of"),
    ("unknown predictor features", "predictor.features=foo", "predictor.features='foo' is invalid; expected one of"),
    ("bad predictor kind, search only", "stages=[search] predictor.accuracy.kind=forest",
     "unknown regressor kind 'forest'; expected one of"),
    ("bad strategy setting, search only", "stages=[search] search.strategy.batch_size=0", "batch_size=0 is invalid"),
    ("bad device key, train only", "stages=[train] device.rounds=0", "device.rounds=0 is invalid"),
    ("zero predictor members", "predictor.latency.n_members=0", "n_members=0 is invalid; expected an integer >= 1"),
    ("bad calibration predictor setting", "calibrate.enabled=true +calibrate.predictor.impute=magic",
     "impute='magic' is invalid; expected one of"),
    ("arch: kernel 9", f"{REMOTE} device.csv=[{{files}}/kernel9.csv]", "ks value 9 is invalid; expected one of [3, 5, 7]"),
    ("arch: resolution 17", f"{REMOTE} device.csv=[{{files}}/res17.csv]", "resolution r=17 is invalid"),
    ("arch: wrong length", f"{REMOTE} device.csv=[{{files}}/length.csv]",
     "arch needs 20 kernel and expand entries, got ks=19 e=20"),
    ("arch: unknown op", f"search_space=fbnet_small {REMOTE} device.csv=[{{files}}/fbnet_op.csv]",
     "fbnet op 'k9_e6' in"),
    ("measurement CSV: missing column", f"{REMOTE} device.csv=[{{files}}/nocolumn.csv]", "lacks column 'device'"),
    ("measurement CSV: NaN latency", f"{REMOTE} device.csv=[{{files}}/nan.csv]",
     "latency_ms=nan (arch"),
    ("measurement CSV: negative latency", f"{REMOTE} device.csv=[{{files}}/negative.csv]",
     "latency_ms=-1.0 (arch"),
    ("measurement CSV: zero latency", f"{REMOTE} device.csv=[{{files}}/zero.csv]", "latency_ms=0.0 (arch"),
    ("measurement CSV: conflicting duplicate", f"{REMOTE} device.csv=[{{files}}/duplicate.csv]",
     "duplicate measurement for arch"),
    ("measurement CSV: not a CSV", f"{REMOTE} device.csv=[{{files}}/passwd.csv]", "is not readable as CSV"),
    ("measurement CSV: binary", f"{REMOTE} device.csv=[{{files}}/binary.csv]", "is not readable as CSV"),
    ("measurement CSV: truncated .gz", f"{REMOTE} device.csv=[{{files}}/truncated.csv.gz]",
     "is not readable as CSV (Compressed file ended"),
    ("measurement CSV: header only", f"{REMOTE} device.csv=[{{files}}/header.csv]", "has no rows"),
    ("measurement CSV: missing file", f"{REMOTE} device.csv=[{{files}}/absent.csv]", "does not exist"),
    ("measurement CSV: another device", "device=remote device.name=pixel7 device.csv=[{files}/good.csv]",
     "device 'pixel7' has no rows in the latency files; found ['pi5']"),
    ("kit CSV from another space", f"{REMOTE} device.csv=[{{files}}/nb201.csv]",
     "holds space 'nb201' measurements; this run's space is 'ofa_mbv3'"),
    ("calibration source from another space",
     "calibrate.enabled=true calibrate.source=[{files}/nb201_source.csv]", "holds space 'nb201' measurements"),
    ("calibration source not a CSV", "calibrate.enabled=true calibrate.source=[{files}/passwd.csv]",
     "is not readable as CSV"),
    ("empty dataset", "data=image_folder data.root={files}/empty_images", "has 0 class folders with images"),
    ("one-class dataset", "data=image_folder data.root={files}/one_class", "has 1 class folders with images"),
    ("unreadable data path", "data=image_folder data.root={files}/absent_dir", "is not a folder"),
    ("data path without the dataset", "data=fashion_mnist data.root={files}/empty_images",
     "lacks ['train-images-idx3-ubyte'"),
    ("storage URL that cannot connect", "search.storage=postgresql+psycopg://nobody@127.0.0.1:9/x",
     "cannot be opened: (psycopg.OperationalError)"),
    ("storage path that cannot be created", "search.storage=sqlite:///{files}/absent_dir/study.db",
     "cannot be opened: (sqlite3.OperationalError)"),
    ("published supernet: another width", f"{OFA} train.import_from={{files}}/ofa_w1.0.pth search_space.width_mult=1.2",
     "has shape [16, 3, 3, 3]; expected [24, 3, 3, 3] for width_mult=1.2"),
    ("published supernet: missing key", f"{OFA} train.import_from={{files}}/ofa_missing.pth",
     "checkpoint lacks 'blocks.7.conv.depth_conv.conv.7to5_matrix'"),
    ("published supernet: truncated file", f"{OFA} train.import_from={{files}}/ofa_truncated.pth",
     "cannot be read as weights"),
    ("published supernet: file that runs code", f"{OFA} train.import_from={{files}}/ofa_code.pth",
     "needs code to load, which is refused (weights_only=True)"),
    ("published supernet: missing file", f"{OFA} train.import_from={{files}}/absent.pth", "does not exist"),
    ("accuracy predictor that runs code", f"{OFA} train.import_from={{files}}/ofa_w1.0.pth "
     "predictor.accuracy_from={files}/ofa_code.pth", "cannot be read as weights: it needs code to load"),
    ("latency predictor of another device that is not one",
     "+search.latency_predictors.pi={files}/ofa_code.pth search.objectives=[accuracy,latency_ms,latency_ms_pi]",
     "ofa_code.pth is not a saved predictor"),
    ("ONNX file that fails to load (hwnas-measure)", "MEASURE {files}/broken_kit --device pi5 --out {run}/m.csv",
     "does not load in onnxruntime"),
    ("unknown engine of a remote device", f"{REMOTE} device.engine=tensorrt",
     "engine 'tensorrt' is unknown; expected one of ['executorch', 'litert', 'onnxruntime', 'openvino', 'torch']"),
    ("engine not installed", "WITHOUT openvino device=openvino",
     "whose Python package 'openvino' is not installed; expected it installed: pip install -e '.[openvino]'"),
    ("kit of another engine (hwnas-measure)",
     "MEASURE {files}/broken_kit --engine openvino --device pi5 --out {run}/m.csv",
     "holds onnxruntime files (0.onnx, ...), not openvino's; expected --engine onnxruntime"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """The bad files of the catalogue, built from real archs of the default spaces."""
    from torch import nn

    from latency_luts.kit import write_manifest
    from latency_luts.onnx_export import export_onnx
    from nas.rundir import build_space

    d = tmp_path_factory.mktemp("bad_files")
    space = build_space(OmegaConf.load(ROOT / "conf/search_space/ofa_mbv3_small.yaml"), n_classes=10, in_channels=1)
    archs = [a.to_string() for a in space.sample_many(3, np.random.default_rng(0))]
    good = pd.DataFrame({"space": "ofa_mbv3", "arch": archs, "device": "pi5", "latency_ms": [1.0, 2.0, 3.0]})
    good.to_csv(d / "good.csv", index=False)
    first = archs[0]
    ks = first.split(";")[0][3:].split(",")
    variants = {
        "kernel9": first.replace(f"ks={ks[0]},", "ks=9,", 1),
        "res17": first.rsplit("r=", 1)[0] + "r=17",
        "length": first.replace(f"ks={ks[0]},", "ks=", 1),
    }
    for name, arch in variants.items():
        good.assign(arch=[arch, *archs[1:]]).to_csv(d / f"{name}.csv", index=False)
    fb = build_space(OmegaConf.load(ROOT / "conf/search_space/fbnet_small.yaml"), n_classes=10, in_channels=1)
    op = fb.sample_many(1, np.random.default_rng(0))[0].to_string().split(",")
    pd.DataFrame({"space": ["fbnet"], "arch": [",".join(["k9_e6", *op[1:]])], "device": ["pi5"],
                  "latency_ms": [1.0]}).to_csv(d / "fbnet_op.csv", index=False)
    good.drop(columns="device").to_csv(d / "nocolumn.csv", index=False)
    for name, value in (("nan", np.nan), ("negative", -1.0), ("zero", 0.0)):
        good.assign(latency_ms=[1.0, value, 3.0]).to_csv(d / f"{name}.csv", index=False)
    pd.concat([good, good.iloc[[0]].assign(latency_ms=9.0)]).to_csv(d / "duplicate.csv", index=False)
    (d / "passwd.csv").write_text("root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/sh,a,b,c\n"
                                  "a,b,c,d,e,f,g\n")
    (d / "binary.csv").write_bytes(b"a\x00\x01\xff\xfe\n")
    good.to_csv(d / "full.csv.gz", index=False)
    (d / "truncated.csv.gz").write_bytes((d / "full.csv.gz").read_bytes()[:60])
    (d / "header.csv").write_text("space,arch,device,latency_ms\n")
    nb = pd.DataFrame({"space": "nb201", "arch": ["|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"],
                       "device": "pi5", "latency_ms": [1.0]})
    nb.to_csv(d / "nb201.csv", index=False)
    pd.concat([nb, nb.assign(device="pixel3")]).to_csv(d / "nb201_source.csv", index=False)
    (d / "empty_images").mkdir()
    from PIL import Image

    (d / "one_class" / "cat").mkdir(parents=True)
    for i in range(4):
        Image.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(d / "one_class" / "cat" / f"{i}.png")
    _published_files(d)
    kit = d / "broken_kit"
    models = []
    for i in range(2):
        export_onnx(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval(), (1, 1, 8, 8), kit / f"{i}.onnx")
        models.append({"file": f"{i}.onnx", "arch": f"toy-{i}", "input_shape": [1, 1, 8, 8]})
    write_manifest(kit, "nb201", models)
    (kit / "1.onnx").write_bytes(b"not an onnx model")
    return d


class RunsCode:
    """Unpickling this would create ``marker`` (a stand-in for a payload that calls os.system)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _published_files(d: Path) -> None:
    """A published-layout OFA w1.0 supernet (our supernet's tensors under OFA's key names) and broken copies; a
    two-class ImageNet-style folder for experiment=ofa_pretrained."""
    import torch
    from PIL import Image

    from nas.rundir import build_space
    from search_spaces.ofa_mbv3.published import key_map

    space = build_space(OmegaConf.load(ROOT / "conf/search_space/ofa_mbv3_imagenet.yaml"), n_classes=1000, in_channels=3)
    ours = space.build_supernet().state_dict()
    state = {ofa: ours[mine] for ofa, mine in key_map().items() if mine in ours}  # SE only where a stage has it
    torch.save({"state_dict": state}, d / "ofa_w1.0.pth")
    torch.save({"state_dict": {k: v for k, v in state.items() if k != "blocks.7.conv.depth_conv.conv.7to5_matrix"}},
               d / "ofa_missing.pth")
    (d / "ofa_truncated.pth").write_bytes((d / "ofa_w1.0.pth").read_bytes()[:200_000])
    torch.save({"state_dict": state, "payload": RunsCode(d / "code_ran")}, d / "ofa_code.pth")
    for c in ("n01", "n02"):
        (d / "imagenet_like" / c).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((40, 48, 3), 60 * i, dtype=np.uint8)).save(d / "imagenet_like" / c / f"{i}.png")


EARLIER = {"summary.json": '{"n_pareto": 4}\n', "pareto.csv": "arch,accuracy\na,0.9\n",
           "stages/train.json": '{"seconds": 1}\n', "search_evaluations.csv": "arch,val_acc\na,0.9\n"}


def _snapshot(run: Path) -> dict[str, str]:
    """Every file of the run directory and its hash, less what Hydra itself writes on each start (.hydra/ and
    its job log)."""
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run.rglob("*"))
            if p.is_file() and p.parts[len(run.parts)] != ".hydra" and p.name != "cli.log"}


def _run_case(args: str, files: Path, run: Path) -> subprocess.CompletedProcess:
    args = args.format(files=files, run=run)
    if args.startswith("MEASURE "):
        cmd = [sys.executable, "-m", "latency_luts.agent", *args.split()[1:]]
    elif args.startswith("WITHOUT "):  # hwnas on a machine without that engine's package (made unimportable)
        _, module, *rest = args.split()
        hide = (f"import runpy, sys; sys.modules[{module!r}] = None; sys.argv = ['hwnas', *sys.argv[1:]]; "
                "runpy.run_module('nas.cli', run_name='__main__')")
        cmd = [sys.executable, "-c", hide, f"hydra.run.dir={run}", *rest]
    else:
        cmd = [sys.executable, "-m", "nas.cli", f"hydra.run.dir={run}", *args.split()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=run.parent)


@pytest.fixture(scope="module")
def results(files: Path, tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path, dict, dict]]:
    """All catalogue commands, two at a time (each is a fresh interpreter that mostly imports), each pointed at
    its own run directory that holds an earlier run's files."""
    root = tmp_path_factory.mktemp("bad_runs")

    def one(i: int) -> tuple[str, tuple]:
        name, args, _ = CATALOGUE[i]
        run = root / f"case{i:02d}"
        for rel, text in EARLIER.items():
            (run / rel).parent.mkdir(parents=True, exist_ok=True)
            (run / rel).write_text(text)
        before = _snapshot(run)
        proc = _run_case(args, files, run)
        return name, (proc, run, before, _snapshot(run))

    with ThreadPoolExecutor(2) as pool:
        return dict(pool.map(one, range(len(CATALOGUE))))


@pytest.mark.parametrize("name, args, fragment", CATALOGUE, ids=[c[0] for c in CATALOGUE])
def test_bad_input_fails_in_one_line_and_leaves_earlier_results(results, name, args, fragment) -> None:
    proc, run, before, after = results[name]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert len(lines) == 1, proc.stderr[-2000:]
    assert fragment in lines[0], lines[0]
    assert lines[0].startswith(("hwnas: error: ", "hwnas-measure: error: ")), lines[0]
    assert after == before, f"{run} changed: {sorted(set(after.items()) ^ set(before.items()))}"


def test_no_catalogue_file_ran_code(results, files: Path) -> None:
    """The pickled payloads of the 'runs code' rows were refused unread: their marker file does not exist."""
    assert len(results) == len(CATALOGUE)
    assert not (files / "code_ran").exists()


def test_docs_table_lists_exactly_the_catalogue() -> None:
    section = (ROOT / "docs" / "bad-input.md").read_text()
    rows = [r for r in section.splitlines() if r.startswith("| ") and not r.startswith(("| input", "|---"))]
    listed = [re.sub(r"\s+", " ", r.split("|")[1].strip()) for r in rows]
    assert listed == [c[0] for c in CATALOGUE]


def test_catalogue_files_are_what_they_claim(files: Path) -> None:
    """The bad files differ from good ones in the one way their row names (a broken fixture would pass for the
    wrong reason)."""
    from latency_luts.interchange import load_latency_table

    assert len(load_latency_table([files / "good.csv"], space="ofa_mbv3", devices=["pi5"])) == 3
    ok = pd.read_csv(files / "good.csv")
    for name in ("kernel9", "res17", "length"):
        bad = pd.read_csv(files / f"{name}.csv")
        assert (bad.arch != ok.arch).sum() == 1 and bad.latency_ms.equals(ok.latency_ms)
