"""No code runs from a file: saved predictors are a data-only format (predictors.saved) read through an
allow-list, checkpoints are weights-only, kit and measurement files are JSON/CSV. Each loader is given a file whose
unpickling would create a marker file; it must be refused in one line (exit 2 where the path comes from the
``hwnas`` command line) and the marker must not exist. Plus save -> load round trips of every saved class and the
converter for old pickled predictors."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from predictors import ArchPredictor, EnsembleRegressor, load_predictor, saved
from predictors.fewshot import FewShotLatencyPredictor, SourceRidgeBaseline


class RunsCode:
    """Unpickling this creates ``marker`` (a stand-in for a payload that calls os.system)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def ofa():
    from search_spaces import create_search_space

    return create_search_space("ofa_mbv3", setting="small", n_classes=10, in_channels=1, resolutions=[16, 24])


@pytest.fixture(scope="module")
def data(ofa):
    rng = np.random.default_rng(0)
    archs = ofa.sample_many(40, rng)
    y = np.array([1.0 + 0.1 * sum(a.to_string().count(c) for c in "57") for a in archs]) + rng.random(40) * 0.05
    return archs, y


@pytest.fixture(scope="module")
def fewshot():
    """A meta-fitted and adapted few-shot predictor and ridge baseline on NB201 archs with three synthetic
    source devices (latency = a per-device linear function of the one-hot encoding)."""
    from search_spaces.nb201.arch import NB201Architecture, encode_onehot
    from search_spaces.nb201.space import NB201Space

    rng = np.random.default_rng(1)
    archs = [a.to_string() for a in NB201Space().sample_many(160, rng)]
    enc = encode_onehot([NB201Architecture.from_string(a) for a in archs])
    lat = pd.DataFrame({f"dev{j}": np.exp(enc @ rng.random(enc.shape[1]) * 0.2) for j in range(3)}, index=archs)
    p = FewShotLatencyPredictor(transforms=("log",), src_scales=(1.0,), proj_scales=(1.0,), pmean_scales=(0.0,),
                                enc_scales=(0.3,), noises=(0.3,), selections=("random",), prior_strengths=(10.0,),
                                meta_tasks=1, meta_pool=60, meta_query=60, meta_budget=10)
    p = p.meta_fit(lat, pd.DataFrame(enc, index=archs))
    y = lat["dev0"].to_numpy() * 1.3
    p.adapt(archs[:10], y[:10])
    b = SourceRidgeBaseline().meta_fit(lat)
    b.adapt(archs[:10], y[:10])
    return p, b, archs[10:]


# ----------------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("kind", ["ridge", "gp"])
def test_arch_predictor_round_trip(ofa, data, tmp_path: Path, kind: str) -> None:
    archs, y = data
    p = ArchPredictor(EnsembleRegressor(kind=kind, n_members=2, log_target=True), ofa).fit(archs[:30], y[:30])
    path = p.save(tmp_path / "latency.skops")
    assert zipfile.is_zipfile(path) and path.read_bytes()[:1] != b"\x80"
    for back in (load_predictor(path), ArchPredictor.load(path)):
        assert isinstance(back, ArchPredictor)
        m0, s0 = p.predict(archs[30:], return_std=True)
        m1, s1 = back.predict(archs[30:], return_std=True)
        assert np.array_equal(m0, m1) and np.array_equal(s0, s1) and m0.std() > 0


def test_ensemble_regressor_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    X, y = rng.random((40, 5)), rng.random(40) + 1
    m = EnsembleRegressor(kind="extra_trees", n_members=2).fit(X, y)
    back = EnsembleRegressor.load(m.save(tmp_path / "m.skops"))
    assert np.array_equal(back.predict(X, return_std=True)[1], m.predict(X, return_std=True)[1])
    assert np.array_equal(back.predict(X), m.predict(X))


def test_fewshot_round_trip(fewshot, tmp_path: Path) -> None:
    p, b, query = fewshot
    p.save(tmp_path / "f.skops")
    b.save(tmp_path / "b.skops")
    p2, b2 = FewShotLatencyPredictor.load(tmp_path / "f.skops"), SourceRidgeBaseline.load(tmp_path / "b.skops")
    for old, new in ((p, p2), (b, b2)):
        m0, s0 = old.predict(query, return_std=True)
        m1, s1 = new.predict(query, return_std=True)
        assert np.array_equal(m0, m1) and np.array_equal(s0, s1) and m0.std() > 0
    assert isinstance(load_predictor(tmp_path / "f.skops"), FewShotLatencyPredictor)
    with pytest.raises(ValueError, match="does not hold a saved FewShotLatencyPredictor"):
        FewShotLatencyPredictor.load(tmp_path / "b.skops")


# ----------------------------------------------------------------------------------------- refusals
def _one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text, text
    return text


def test_pickled_payload_refused_by_every_predictor_loader(tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"
    evil = tmp_path / "latency.pkl"
    evil.write_bytes(pickle.dumps(RunsCode(marker)))
    loaders = (load_predictor, ArchPredictor.load, EnsembleRegressor.load, FewShotLatencyPredictor.load,
               SourceRidgeBaseline.load, saved.read)
    for load in loaders:
        with pytest.raises(ValueError) as e:
            load(evil)
        assert f"hwnas-convert-predictor --trusted {evil} {tmp_path / 'latency.skops'}" in _one_line(e)
    assert not marker.exists()
    pickle.loads(evil.read_bytes())  # the payload is real: unpickled, it runs
    assert marker.exists()


def _crafted(tmp_path: Path, module: str, name: str, args: list) -> Path:
    """A skops file whose predictor, rebuilt by a loader that trusted every type, calls ``module.name(*args)``."""
    from zoneinfo import ZoneInfo

    import skops.io as sio

    blob = sio.dumps({"format": saved.FORMAT, "version": saved.VERSION, "class": "x", "layout": None,
                      "predictor": ZoneInfo("UTC")})
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        files = {n: z.read(n) for n in z.namelist()}
    schema = json.loads(files["schema.json"])
    node = schema["content"]["predictor"]
    assert node["__loader__"] == "ConstructorFromReduceNode"
    node["__module__"], node["__class__"] = module, name
    node["content"]["content"] = [{"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode",
                                   "content": json.dumps(a), "is_json": True, "__id__": 7000 + i} for i, a in enumerate(args)]
    files["schema.json"] = json.dumps(schema).encode()
    out = tmp_path / f"{name}.skops"
    with zipfile.ZipFile(out, "w") as z:
        for n, data in files.items():
            z.writestr(n, data)
    return out


def test_crafted_skops_payloads_refused(tmp_path: Path) -> None:
    """A data-only file can still name a callable: one outside the allowed packages (os.system) and a function
    inside them (the converter, which unpickles its argument) are both refused before anything is built."""
    import skops.io as sio

    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(RunsCode(marker)))
    system = _crafted(tmp_path, os.system.__module__, "system", [f"touch {tmp_path / 'shell_ran'}"])
    convert = _crafted(tmp_path, "predictors.convert", "convert", [str(evil), str(tmp_path / "out.skops")])
    for path, name in ((system, f"{os.system.__module__}.system"), (convert, "predictors.convert.convert")):
        with pytest.raises(ValueError) as e:
            load_predictor(path)
        assert f"names type {name!r}, which a saved predictor may not hold" in _one_line(e)
    assert not marker.exists() and not (tmp_path / "shell_ran").exists()
    sio.loads(system.read_bytes(), trusted=sio.get_untrusted_types(file=system))  # real: trusted, it runs
    assert (tmp_path / "shell_ran").exists()


def test_non_predictor_files_refused(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("{}")
    (tmp_path / "w.skops").write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip: no skops schema
    with pytest.raises(ValueError, match="is not a saved predictor") as e:
        load_predictor(tmp_path / "a.json")
    _one_line(e)
    with pytest.raises(ValueError, match="is not a saved predictor"):
        load_predictor(tmp_path / "w.skops")
    with pytest.raises(ValueError, match="cannot read saved predictor"):
        load_predictor(tmp_path / "absent.skops")


# ----------------------------------------------------------------------------------------- converter
def test_converter_needs_trust_and_keeps_predictions(ofa, data, fewshot, tmp_path: Path, capsys) -> None:
    from importlib.metadata import entry_points

    from predictors.convert import main
    from predictors.fewshot.common import FORMAT_VERSION

    assert [e.value for e in entry_points(group="console_scripts", name="hwnas-convert-predictor")] == \
        ["predictors.convert:main"]
    archs, y = data
    p = ArchPredictor(EnsembleRegressor(kind="ridge", n_members=2), ofa).fit(archs[:30], y[:30])
    (tmp_path / "old.pkl").write_bytes(pickle.dumps(p))
    assert main([str(tmp_path / "old.pkl"), str(tmp_path / "new.skops")]) == 2
    assert "runs any code the file holds" in capsys.readouterr().err and not (tmp_path / "new.skops").exists()
    assert main(["--trusted", str(tmp_path / "old.pkl"), str(tmp_path / "new.skops")]) == 0
    assert np.array_equal(load_predictor(tmp_path / "new.skops").predict(archs), p.predict(archs))
    f, _, query = fewshot  # the few-shot predictors' old layout: {"format", "class", "state"}
    blob = {"format": FORMAT_VERSION, "class": "FewShotLatencyPredictor", "state": f.__dict__}
    (tmp_path / "f.pkl").write_bytes(pickle.dumps(blob))
    assert main(["--trusted", str(tmp_path / "f.pkl"), str(tmp_path / "f.skops")]) == 0
    assert np.array_equal(FewShotLatencyPredictor.load(tmp_path / "f.skops").predict(query), f.predict(query))
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2]))
    assert main(["--trusted", str(tmp_path / "list.pkl"), str(tmp_path / "l.skops")]) == 2
    assert "holds a list; expected a pickled hwnas predictor" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------- through the CLI
def _snapshot(run: Path) -> dict[str, bytes]:
    """The run directory's files, less what every start writes (Hydra's folder, the log, stage locks)."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file() and ".hydra" not in p.parts and p.name != "cli.log" and p.suffix != ".lock"}


def _cli(args: list[str], run: Path, module: str = "nas.cli") -> tuple[int, list[str]]:
    cmd = [sys.executable, "-m", module, *([f"hydra.run.dir={run}"] if module == "nas.cli" else []), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=run.parent)
    return proc.returncode, [ln for ln in proc.stderr.splitlines() if ln.strip()]


@pytest.fixture(scope="module")
def payloads(tmp_path_factory) -> Path:
    import torch

    d = tmp_path_factory.mktemp("payloads")
    marker = d / "code_ran"
    (d / "latency.pkl").write_bytes(pickle.dumps(RunsCode(marker)))
    (d / "disguised.skops").write_bytes(pickle.dumps(RunsCode(marker)))
    (d / "device.csv").write_bytes(pickle.dumps(RunsCode(marker)))
    torch.save({"model": {}, "payload": RunsCode(marker)}, d / "supernet.pt")
    return d


LOADERS = [
    ("saved predictor (.pkl)", ["experiment=smoke", "+search.latency_predictors.pi={d}/latency.pkl",
                                "search.objectives=[accuracy,latency_ms,latency_ms_pi]"],
     "is a pickled predictor of an older version"),
    ("saved predictor (pickle named .skops)", ["experiment=smoke", "+search.latency_predictors.pi={d}/disguised.skops",
                                               "search.objectives=[accuracy,latency_ms,latency_ms_pi]"],
     "hwnas-convert-predictor --trusted"),
    ("calibrate.source", ["experiment=smoke", "calibrate.enabled=true", "calibrate.source=[{d}/latency.pkl]"],
     "is a pickled predictor of an older version"),
    ("run checkpoint (measure stage)", ["experiment=smoke", "stages=[measure]", "CKPT=supernet.pt"],
     "cannot be read as weights: it needs code to load"),
    ("run checkpoint (train resume)", ["experiment=smoke", "stages=[train]", "CKPT=supernet.partial.pt"],
     "cannot be read as weights: it needs code to load"),
    ("measurement CSV", ["experiment=smoke", "device=remote", "device.name=pi5", "device.csv=[{d}/device.csv]"],
     "is not readable as CSV"),
]


@pytest.mark.slow
@pytest.mark.parametrize("name, args, fragment", LOADERS, ids=[c[0] for c in LOADERS])
def test_cli_refuses_code_in_one_line(payloads: Path, tmp_path: Path, name: str, args: list[str],
                                      fragment: str) -> None:
    run = tmp_path / "run"
    (run / "stages").mkdir(parents=True)
    (run / "summary.json").write_text('{"n_pareto": 4}\n')
    ckpt = [a.split("=", 1)[1] for a in args if a.startswith("CKPT=")]
    if ckpt:
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / ckpt[0]).write_bytes((payloads / "supernet.pt").read_bytes())
    before = _snapshot(run)
    rc, lines = _cli([a.format(d=payloads) for a in args if not a.startswith("CKPT=")], run)
    assert rc == 2 and len(lines) == 1, lines[-20:]
    assert lines[0].startswith("hwnas: error: ") and fragment in lines[0], lines[0]
    assert _snapshot(run) == before
    assert not (payloads / "code_ran").exists()


@pytest.mark.slow
def test_measurement_kit_refuses_payload_files(payloads: Path, tmp_path: Path) -> None:
    """hwnas-measure parses only manifest.json (JSON) and ONNX files: a pickle in either place is one line."""
    from torch import nn

    from latency_luts.kit import write_manifest
    from latency_luts.onnx_export import export_onnx

    for where in ("manifest", "model"):
        kit = tmp_path / where
        export_onnx(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval(), (1, 1, 8, 8), kit / "0.onnx")
        (kit / "1.onnx").write_bytes(b"")
        write_manifest(kit, "nb201", [{"file": f"{i}.onnx", "arch": f"toy-{i}", "input_shape": [1, 1, 8, 8]}
                                      for i in range(2)])
        target = kit / ("manifest.json" if where == "manifest" else "1.onnx")
        target.write_bytes(pickle.dumps(RunsCode(payloads / "code_ran")))
        rc, lines = _cli([str(kit), "--device", "pi5", "--out", str(tmp_path / f"{where}.csv")], tmp_path,
                         module="latency_luts.agent")
        assert rc == 2 and len(lines) == 1, lines[-20:]
        want = "is not valid JSON" if where == "manifest" else "does not load in onnxruntime"
        assert lines[0].startswith("hwnas-measure: error: ") and want in lines[0], lines[0]
        assert not (tmp_path / f"{where}.csv").exists()
    assert not (payloads / "code_ran").exists()
