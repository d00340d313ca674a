"""The benchmark (``fastbn.bench``, ``fastbn bench``, ``bench/run.py``) on a quick smoke run.

It must verify every peer against the fused step before timing, write a readable table, JSON and
chart, and refuse to time a peer that computes something else. No timing assertions here: the
speed targets (bench/targets.json) are checked and reported by the benchmark itself, never by the
tests. The committed bench/results/results.md must be what the report writer makes of the
committed results.json. Needs names.txt through $FASTBN_DATA (skipped otherwise), like the other
real-data tests.
"""
import io
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fastbn
from fastbn import bench, reference
from fastbn.bench import opcalls, report
from fastbn.cli import build_parser, main
from fastbn.model import CharMLP

REAL_NAMES = os.environ.get("FASTBN_DATA")
ROOT = Path(__file__).resolve().parents[1]
TARGETS = ROOT / "bench" / "targets.json"          # the project's targets
RESULTS = ROOT / "bench" / "results"               # the committed record of a full run


@pytest.fixture(scope="module")
def dataset(names):
    return names


def torch_or_none():
    """torch, or None when it is not installed (its rows of the run are then skipped, saying
    why); with FASTBN_REQUIRE_TORCH=1 (CI) a missing torch is an error, not a skip."""
    if os.environ.get("FASTBN_REQUIRE_TORCH") == "1":
        import torch
        return torch
    try:
        import torch
    except ImportError:
        return None
    return torch


def torch_available():
    return torch_or_none() is not None


@pytest.fixture(scope="module")
def smoke(dataset, tmp_path_factory):
    """One quick run at B = 32 and 64, both dtypes, judged against the project's targets:
    (results, out dir, printed table)."""
    out = tmp_path_factory.mktemp("bench")
    printed = io.StringIO()
    torch = torch_or_none()
    with bench.one_thread(torch):                  # as `fastbn bench` runs it
        res = bench.run((32, 64), ("float32", "float64"), repeats=1, out=out, quick=True,
                        use_compiled=False, data=dataset, targets=TARGETS,
                        machine={"fastbn_git": "v0-test-describe"},
                        stream=None, stdout=printed)
    return res, out, printed.getvalue()


def _blas():
    from threadpoolctl import threadpool_info
    return sorted((p["filepath"], p["num_threads"]) for p in threadpool_info()
                  if p["user_api"] == "blas")


def test_run_leaves_the_process_threads_alone_and_one_thread_restores_them(dataset, tmp_path):
    before = _blas()
    res = bench.run((32,), ("float32",), repeats=1, out=tmp_path, quick=True, data=dataset,
                    use_torch=False, use_compiled=False, stream=None, stdout=None)
    assert _blas() == before
    assert res["machine"]["blas_threads"] == sorted({n for _, n in before})
    with bench.one_thread():
        assert {n for _, n in _blas()} == {1}
    assert _blas() == before


def test_step_flops_is_the_six_gemms():
    # forward x0 @ W1, h @ W2; per Linear the weight and the input gradient: 2 M N K each
    B, T, D, H, V = 32, 3, 10, 200, 27
    gemms = [(B, H, T * D), (B, V, H), (H, V, B), (B, H, V), (T * D, H, B), (B, T * D, H)]
    assert bench.step_flops(B) == sum(2 * m * n * k for m, n, k in gemms) == 2_188_800
    assert bench.fused_flops(B, table=False) == bench.step_flops(B)
    # the table path: the first Linear's GEMMs run over the vocabulary (T of each), not the batch
    B = 1024
    table = [(V, H, D)] * T + [(D, H, V)] * T + [(V, D, H)] * T + [(B, V, H), (H, V, B), (B, H, V)]
    assert bench.fused_flops(B, table=True) == sum(2 * m * n * k for m, n, k in table)


def test_smoke_run_verifies_then_times_every_peer(smoke):
    res, _, _ = smoke
    expected = ["fused", "per_layer", "numpy"] + (["torch"] if torch_available() else [])
    assert list(res["implementations"]) == expected
    assert [(r["dtype"], r["batch_size"]) for r in res["results"]] == \
        [("float32", 32), ("float32", 64), ("float64", 32), ("float64", 64)]
    for row in res["results"]:
        ver = row["verification"]
        assert set(ver) == set(expected) | {"fused_loop"}
        loss_tol = bench.LOSS_TOL[row["dtype"]]["atol"]
        for name, v in ver.items():
            assert len(v["losses"]) == bench.VERIFY_STEPS
            assert all(2.5 < x < 4.0 for x in v["losses"]), (name, v["losses"])   # ~ ln 27
            if name != "fused_loop":
                assert v["max_loss_diff"] <= loss_tol, (row["dtype"], name)
        assert set(row["impls"]) == set(expected)
        for t in row["impls"].values():
            assert math.isfinite(t["us_per_step"]) and t["us_per_step"] > 0
            assert len(t["us_all"]) == len(t["cpu_share"]) == 1 and t["steps_per_block"] >= 1
            assert 0 <= t["discarded"] <= 1                     # at most `repeats` re-timed
        assert row["impls"]["fused"]["speedup"] == 1.0
        assert row["flops"] == bench.step_flops(row["batch_size"])
        assert row["fused_flops"] == bench.fused_flops(row["batch_size"], row["fused_table"])
        assert row["floor_us"] > 0 and row["fused_gflops"] > 0
    m = res["machine"]
    assert m["blas_threads"] == [1]                 # pinned by threadpoolctl
    assert m["torch"] is None or m["torch_threads"] == 1
    assert m["cpu"]["model"] and m["numpy"] and m["scipy_openblas32"]
    assert set(res["gemm_peak"]) == {"float32", "float64"}
    assert all(p["gflops"] > 0 for p in res["gemm_peak"].values())
    assert res["full_training"] is None                       # --full is off by default
    assert m["fastbn_git"] == "v0-test-describe"              # the caller's machine information
    assert Path(m["fastbn_file"]) == Path(fastbn.__file__).resolve().parent
    targets = json.loads(TARGETS.read_text(encoding="utf-8"))["targets"]
    assert [t["target"] for t in res["targets"]] == \
        [t["target"] for t in bench.judge(res, bench.load_targets(TARGETS))]
    assert len(res["targets"]) == len(targets)
    assert {t["ok"] for t in res["targets"] if "200,000" in t["target"]} == {None}
    # B = 1024 was not run: not measured, not failed
    assert {t["ok"] for t in res["targets"] if "B=1024" in t["target"]} == {None}
    # B = 32 was run: judged, except a target against PyTorch when it is not installed
    peers = [t.get("peer") for t in bench.load_targets(TARGETS)["targets"]]
    b32 = [(t["ok"], peer) for t, peer in zip(res["targets"], peers) if "B=32" in t["target"]]
    assert {ok for ok, peer in b32 if peer != "torch" or torch_available()} <= {True, False}
    if not torch_available():
        assert {ok for ok, peer in b32 if peer == "torch"} <= {None}
        assert any(n.startswith("PyTorch skipped: not importable") for n in res["notes"])


def test_smoke_run_times_pytorch_too(smoke, torch):
    """With torch installed (required in CI), the run verifies and times it like every peer, in
    both tables, and judges the targets against it; without it this test skips, saying why."""
    res, out, _ = smoke
    assert "torch" in res["implementations"] and "torch" in res["opcalls"]["impls"]
    for row in res["results"]:
        assert "torch" in row["verification"] and "torch" in row["impls"]
    peers = [t.get("peer") for t in bench.load_targets(TARGETS)["targets"]]
    judged = {t["ok"] for t, peer in zip(res["targets"], peers)
              if peer == "torch" and "B=32" in t["target"]}
    assert judged and judged <= {True, False}
    assert not any(n.startswith("PyTorch skipped") for n in res["notes"])


def test_smoke_run_times_one_call_of_every_op(smoke):
    """The per-op table: float32, B = 32 (the table's batch size the run has), every op, both
    passes, fastbn, NumPy and PyTorch when it is there; in results.json and results.md."""
    res, out, _ = smoke
    opc = res["opcalls"]
    impls = ["fastbn", "numpy"] + (["torch"] if torch_available() else [])
    assert opc["dtype"] == "float32" and opc["batch_sizes"] == [32] and opc["impls"] == impls
    assert [(r["op"], r["pass"]) for r in opc["rows"]] == \
        [(op, p) for op in opcalls.OPS for p in opcalls.PASSES]
    for r in opc["rows"]:
        assert r["batch_size"] == 32 and set(r["impls"]) == set(impls) == set(r["statements"])
        for t in r["impls"].values():
            assert math.isfinite(t["us"]) and t["us"] > 0 and t["calls_per_block"] >= 1
            assert len(t["us_all"]) == 1 and 0 <= t["discarded"] <= 1
    md = (out / "results.md").read_text(encoding="utf-8")
    assert "\n## One op call (float32)\n" in md
    assert md.count("| forward |") == md.count("| backward |") == len(opcalls.OPS)
    assert json.loads((out / "results.json").read_text(encoding="utf-8"))["opcalls"] == \
        json.loads(json.dumps(opc))


def test_the_op_table_verifies_every_implementation(monkeypatch):
    """An implementation that computes something else is refused before anything is timed."""
    cases, impls = opcalls.prepare([4], "float64")
    assert impls == ["fastbn", "numpy"] and len(cases) == len(opcalls.OPS)
    bn = reference.batchnorm_backward
    monkeypatch.setattr(reference, "batchnorm_backward",
                        lambda dout, cache: tuple(1.001 * g for g in bn(dout, cache)))
    with pytest.raises(bench.VerificationError, match="numpy batchnorm backward at B=4"):
        opcalls.prepare([4], "float64")


def test_the_op_table_batch_sizes():
    assert opcalls.table_batch_sizes([32, 256, 1024, 4096]) == [32, 1024]
    assert opcalls.table_batch_sizes([1024, 64]) == [1024]
    assert opcalls.table_batch_sizes([256, 64]) == [64]


def test_smoke_run_writes_table_json_and_chart(smoke):
    res, out, printed = smoke
    md = (out / "results.md").read_text(encoding="utf-8")
    assert md.strip() and md.strip() in printed             # the table is printed too
    for label in res["implementations"].values():
        assert label in md
    assert "## float32" in md and "## float64" in md and "GEMM peak" in md
    assert f"fastbn {fastbn.__version__} (v0-test-describe)." in md
    assert "\n## Targets (issues 5 and 14)\n" in md
    assert md.count("| not measured |") == sum(t["ok"] is None for t in res["targets"]) >= 3
    assert md.count("\n| 32 |") == 2 and md.count("\n| 64 |") == 2
    data = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert data["results"][0]["impls"]["fused"]["us_per_step"] == \
        res["results"][0]["impls"]["fused"]["us_per_step"]
    assert data["settings"]["dtypes"] == ["float32", "float64"]
    assert "6 * B * H * (T*D + V)" in data["flops"]["formula"]
    mpimg = pytest.importorskip("matplotlib.image")
    png = out / bench.CHART
    assert png.stat().st_size > 0 and data["chart"] == bench.CHART
    img = mpimg.imread(png)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert not list(out.glob("*.tmp"))


def _broken_backward(monkeypatch):
    # tanh backward without the (1 - t^2) factor: the first loss still agrees, the update not
    monkeypatch.setattr(reference, "tanh_backward", lambda dout, cache: dout)
    return "NumPy"


def _broken_forward(monkeypatch):
    ce = reference.cross_entropy_forward

    def wrong(logits, target):
        loss, cache = ce(logits, target)
        return loss * (1 + 1e-4), cache
    monkeypatch.setattr(reference, "cross_entropy_forward", wrong)
    return "NumPy"


def _broken_update(monkeypatch):
    step = CharMLP.train_step
    monkeypatch.setattr(CharMLP, "train_step", lambda self, X, Y, lr: step(self, X, Y, 1.01 * lr))
    return "per-layer"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("breakage", [_broken_backward, _broken_forward, _broken_update])
def test_a_wrong_peer_fails_verification_and_nothing_is_timed(dataset, tmp_path, monkeypatch,
                                                              dtype, breakage):
    who = breakage(monkeypatch)
    with pytest.raises(bench.VerificationError, match=who):
        bench.run((32,), (dtype,), repeats=1, out=tmp_path, quick=True, use_torch=False,
                  use_compiled=False, data=dataset, stream=None, stdout=None)
    assert not (tmp_path / "results.json").exists() and not (tmp_path / "results.md").exists()


def test_cli_bench_command(dataset, tmp_path, monkeypatch, capsys):
    """Without --out, ``fastbn bench`` writes fastbn-bench/ in the current folder; without
    --targets it judges nothing; the installed benchmark knows no git. It prints where it wrote
    its files, not the report (that is results.md)."""
    monkeypatch.chdir(tmp_path)
    rc = main(["bench", "--quick", "--no-torch", "--no-compiled", "--batch-sizes", "32",
               "--dtypes", "float32",
               "--data", REAL_NAMES])
    assert rc == 0
    out = capsys.readouterr().out
    folder = Path("fastbn-bench")
    lines = out.splitlines()
    assert lines[:2] == [f"results {folder / 'results.md'}", f"results {folder / 'results.json'}"]
    assert lines[2:] in ([], [f"figure {folder / 'us_per_step.png'}"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fastbn-bench"]
    md = (tmp_path / "fastbn-bench" / "results.md").read_text(encoding="utf-8")
    assert "| 32 |" in md and "fastbn fused loop" in md and "| 32 |" not in out
    data = json.loads((tmp_path / "fastbn-bench" / "results.json").read_text(encoding="utf-8"))
    assert list(data["implementations"]) == ["fused", "per_layer", "numpy"]
    assert data["settings"]["repeats"] == 1 and data["settings"]["quick"] is True
    assert data["targets"] == [] and "Targets" not in md
    assert "fastbn_git" not in data["machine"] and f"fastbn {fastbn.__version__}." in md
    assert (tmp_path / lines[-1].split(" ", 1)[1]).is_file()


def test_cli_bench_help_states_the_default_folder(capsys):
    args = build_parser().parse_args(["bench"])
    assert args.out == bench.DEFAULT_OUT == "fastbn-bench" and args.targets is None
    with pytest.raises(SystemExit) as info:
        main(["bench", "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(default fastbn-bench in the current folder)" in text


def test_cli_bench_refuses_bad_targets_before_running(tmp_path, capsys):
    bad = tmp_path / "targets.json"
    bad.write_text('[{"metric": "speedup", "dtype": "float32", "batch_size": 32, "min": 10}]')
    out = tmp_path / "out"
    # no --data: the names file is not even looked for before the targets are checked
    rc = main(["bench", "--quick", "--targets", str(bad), "--out", str(out)])
    assert rc == 1
    err = capsys.readouterr().err
    assert "fastbn bench: error:" in err and "target 0: metric speedup needs peer" in err
    rc = main(["bench", "--quick", "--targets", str(tmp_path / "missing.json"), "--out", str(out)])
    assert rc == 1 and "missing.json" in capsys.readouterr().err
    assert not out.exists()


def test_cli_bench_reports_a_failed_verification(dataset, tmp_path, monkeypatch, capsys):
    _broken_backward(monkeypatch)
    rc = main(["bench", "--quick", "--no-torch", "--no-compiled", "--batch-sizes", "32",
               "--dtypes", "float64",
               "--data", REAL_NAMES, "--out", str(tmp_path)])
    assert rc == 1
    assert "fastbn bench: error:" in capsys.readouterr().err


def test_bench_script_help():
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--help"],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    for opt in ("--batch-sizes", "--dtypes", "--repeats", "--out", "--targets", "--no-torch",
                "--no-compiled",
                "--full", "--quick"):
        assert opt in r.stdout
    # the repository's script writes the repository's figures and judges the project's targets,
    # wherever it is started from
    # (argparse wraps the help where it likes, a path's hyphens and spaces included: compare
    # without any whitespace)
    text = "".join(r.stdout.split())
    assert "".join(f"(default {RESULTS})".split()) in text
    assert "".join(f"default {TARGETS})".split()) in text


def test_divergence_ab_script_help():
    """bench/divergence_ab.py (the cost of the divergence check against a build before it)
    imports and states its options; a real run needs a second build (--before)."""
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "divergence_ab.py"), "--help"],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    for opt in ("--before", "--dtypes", "--batch-sizes", "--repeats", "--block-seconds",
                "--verify-steps", "--out"):
        assert opt in r.stdout


# ----------------------------------------------------------------------------------------------
# the report and the targets, without running anything

def test_committed_results_md_is_the_report_of_committed_results_json():
    """bench/results/ is the record of a full run: results.md must be what the report writer
    makes of results.json, and the targets judged as bench/targets.json says."""
    res = json.loads((RESULTS / "results.json").read_text(encoding="utf-8"))
    targets = bench.load_targets(TARGETS)
    assert bench.judge(res, targets) == res["targets"]
    res.setdefault("targets_title", targets["title"])     # that run predates the stored title
    assert report.markdown(res) == (RESULTS / "results.md").read_text(encoding="utf-8")


def _result(us, full=None):
    """A results dict with the cells {(dtype, B): {peer: us/step}} and full training."""
    rows = [{"dtype": dt, "batch_size": B,
             "impls": {k: {"us_per_step": v, "speedup": v / cell["fused"]}
                       for k, v in cell.items()}}
            for (dt, B), cell in us.items()]
    return {"results": rows, "full_training": full}


def test_targets_are_judged_by_their_bounds():
    res = _result({("float32", 32): {"fused": 20.0, "torch": 200.0, "numpy": 60.0}},
                  full={"steps": 1000, "wall_seconds": 3.0, "losses": {"val": 2.2}})
    targets = bench.load_targets({"title": "Goals", "targets": [
        {"metric": "us_per_step", "dtype": "float32", "batch_size": 32, "max": 20},
        {"metric": "us_per_step", "dtype": "float32", "batch_size": 32, "max": 19.9},
        {"metric": "us_per_step", "dtype": "float32", "batch_size": 32, "peer": "numpy",
         "max": 100},
        {"metric": "speedup", "dtype": "float32", "batch_size": 32, "peer": "torch", "min": 10},
        {"metric": "speedup", "dtype": "float32", "batch_size": 32, "peer": "numpy", "min": 3.5},
        {"metric": "speedup", "dtype": "float64", "batch_size": 32, "peer": "numpy", "min": 1},
        {"metric": "speedup", "dtype": "float32", "batch_size": 32, "peer": "per_layer",
         "min": 1},
        {"metric": "full_seconds", "max": 3},
        {"metric": "full_val_loss", "max": 2.11},
    ]})
    assert targets["title"] == "Goals"
    got = [(t["target"], t["measured"], t["ok"]) for t in bench.judge(res, targets)]
    assert got == [
        ("B=32 float32: fused <= 20 us/step", "20.0 us", True),           # the bound is met
        ("B=32 float32: fused <= 19.9 us/step", "20.0 us", False),
        ("B=32 float32: NumPy <= 100 us/step", "60.0 us", True),
        ("B=32 float32: >= 10x faster than PyTorch eager", "10.0x", True),
        ("B=32 float32: >= 3.5x faster than NumPy", "3.0x", False),
        ("B=32 float64: >= 1x faster than NumPy", None, None),            # dtype not run
        ("B=32 float32: >= 1x faster than the per-layer API", None, None),  # peer not run
        ("1,000 steps (fused loop) <= 3 s", "3.00 s", True),
        ("val loss after 1,000 steps <= 2.11", "2.2000", False),
    ]
    assert bench.judge(res, None) == []
    # no full training: those targets are not measured (and name the default run's steps)
    got = bench.judge(_result({}), bench.load_targets([{"metric": "full_seconds", "max": 1}]))
    assert got == [{"target": f"{bench.FULL_STEPS:,} steps (fused loop) <= 1 s",
                    "measured": None, "value": None, "ok": None}]


def _opcall_rows(us):
    """A per-op table of rows {(op, pass, B): {impl: us}}."""
    return {"dtype": "float32", "impls": ["fastbn", "numpy", "torch"],
            "rows": [{"op": op, "pass": p, "batch_size": B,
                      "impls": {k: {"us": v} for k, v in cell.items()}}
                     for (op, p, B), cell in us.items()]}


def test_issue_14_targets_are_judged():
    res = _result({("float32", 32): {"fused": 20.0, "per_layer": 40.0, "numpy": 100.0}})
    res["opcalls"] = _opcall_rows({
        ("tanh", "forward", 32): {"fastbn": 1.0, "numpy": 1.5, "torch": 0.5},
        ("batchnorm", "forward", 32): {"fastbn": 2.0, "numpy": 9.0, "torch": 4.0},
        ("batchnorm", "backward", 32): {"fastbn": 2.0, "numpy": 3.0, "torch": 4.0},
        ("linear_output", "forward", 32): {"fastbn": 3.0, "numpy": 2.6, "torch": 4.0}})
    targets = bench.load_targets([
        {"metric": "speedup_of", "dtype": "float32", "batch_size": 32, "impl": "per_layer",
         "peer": "numpy", "min": 2.5},
        {"metric": "speedup_of", "dtype": "float32", "batch_size": 32, "impl": "per_layer",
         "peer": "numpy", "min": 2.6},
        {"metric": "op_speedup", "op": "tanh", "pass": "forward", "batch_size": 32,
         "peer": "numpy", "min": 1},
        {"metric": "op_speedup", "op": "tanh", "pass": "forward", "batch_size": 32,
         "peer": "torch", "min": 1},
        {"metric": "op_speedup", "op": "batchnorm", "pass": "forward+backward",
         "batch_size": 32, "peer": "numpy", "min": 3},
        {"metric": "op_gap_us", "op": "linear_output", "pass": "forward", "batch_size": 32,
         "peer": "numpy", "max": 0.5},
        {"metric": "op_gap_us", "op": "linear_output", "pass": "forward", "batch_size": 32,
         "peer": "numpy", "max": 0.3},
        {"metric": "op_speedup", "op": "relu", "pass": "forward", "batch_size": 32,
         "peer": "numpy", "min": 1},
        {"metric": "op_speedup", "op": "tanh", "pass": "forward", "batch_size": 1024,
         "peer": "numpy", "min": 1},
        {"metric": "op_speedup", "op": "tanh", "pass": "forward", "batch_size": 32,
         "peer": "numpy", "dtype": "float64", "min": 1},
    ])
    got = [(t["target"], t["measured"], t["ok"]) for t in bench.judge(res, targets)]
    assert got == [
        ("B=32 float32: the per-layer API >= 2.5x faster than NumPy", "2.50x", True),
        ("B=32 float32: the per-layer API >= 2.6x faster than NumPy", "2.50x", False),
        ("one call, B=32 float32: tanh forward >= 1x faster than NumPy", "1.50x", True),
        ("one call, B=32 float32: tanh forward >= 1x faster than PyTorch", "0.50x", False),
        ("one call, B=32 float32: batch norm forward+backward >= 3x faster than NumPy",
         "3.00x", True),
        ("one call, B=32 float32: linear, output forward <= 0.5 us slower than NumPy",
         "+0.40 us", True),
        ("one call, B=32 float32: linear, output forward <= 0.3 us slower than NumPy",
         "+0.40 us", False),
        ("one call, B=32 float32: relu forward >= 1x faster than NumPy", None, None),
        ("one call, B=1024 float32: tanh forward >= 1x faster than NumPy", None, None),
        ("one call, B=32 float64: tanh forward >= 1x faster than NumPy", None, None),
    ]
    del res["opcalls"]                                    # a run from before the table
    assert {t["ok"] for t in bench.judge(res, targets)[2:]} == {None}


@pytest.mark.parametrize("spec,message", [
    ({"metric": "op_speedup", "op": "softmax", "pass": "forward", "batch_size": 32,
      "peer": "numpy", "min": 1}, "op must be one of"),
    ({"metric": "op_speedup", "op": "tanh", "pass": "sideways", "batch_size": 32,
      "peer": "numpy", "min": 1}, "pass must be one of forward, backward, forward+backward"),
    ({"metric": "op_speedup", "op": "tanh", "pass": "forward", "batch_size": 32,
      "peer": "fused", "min": 1}, "peer must be one of numpy, torch"),
    ({"metric": "op_gap_us", "op": "tanh", "pass": "forward", "peer": "numpy", "max": 1},
     "needs batch_size"),
    ({"metric": "op_gap_us", "op": "tanh", "pass": "forward", "batch_size": 32,
      "peer": "numpy", "max": 1, "impl": "fused"}, "unknown key(s) impl"),
    ({"metric": "speedup_of", "dtype": "float32", "batch_size": 32, "peer": "numpy",
      "min": 1}, "needs impl"),
    ({"metric": "speedup_of", "dtype": "float32", "batch_size": 32, "impl": "numpy",
      "peer": "numpy", "min": 1}, "impl must be one of"),
])
def test_bad_issue_14_targets_are_refused(spec, message):
    with pytest.raises(ValueError) as info:
        bench.load_targets([spec])
    assert message in str(info.value)


@pytest.mark.parametrize("spec, message", [
    (42, "expected a list of targets"),
    ({"targets": [], "extra": 1}, "expected a list of targets"),
    ({"title": "", "targets": []}, "the title must be a one-line string"),
    ([{"metric": "flops", "max": 1}], "target 0: expected {\"metric\": one of"),
    (["us_per_step"], "target 0: expected {\"metric\""),
    ([{"metric": "full_seconds"}], "exactly one bound"),
    ([{"metric": "full_seconds", "min": 1, "max": 2}], "exactly one bound"),
    ([{"metric": "full_seconds", "max": True}], "max must be a finite number"),
    ([{"metric": "full_seconds", "max": float("nan")}], "max must be a finite number"),
    ([{"metric": "full_seconds", "max": "12"}], "max must be a finite number"),
    ([{"metric": "full_seconds", "max": 12, "dtype": "float32"}], "unknown key(s) dtype"),
    ([{"metric": "us_per_step", "max": 1, "batch_size": 32}], "needs dtype"),
    ([{"metric": "us_per_step", "max": 1, "dtype": "float16", "batch_size": 32}],
     "dtype must be float32 or float64"),
    ([{"metric": "us_per_step", "max": 1, "dtype": "float32", "batch_size": 1}],
     "batch_size must be an integer >= 2"),
    ([{"metric": "us_per_step", "max": 1, "dtype": "float32", "batch_size": 32.0}],
     "batch_size must be an integer >= 2"),
    ([{"metric": "us_per_step", "max": 1, "dtype": "float32", "batch_size": 32, "peer": "jax"}],
     "peer must be one of fused, per_layer, numpy, torch"),
    ([{"metric": "full_val_loss", "max": 3}, {"metric": "speedup", "min": 1,
                                               "dtype": "float32", "batch_size": 32,
                                               "peer": "fused"}],
     "target 1: peer must be one of per_layer, numpy, torch"),
])
def test_bad_targets_are_refused_with_the_reason(spec, message):
    with pytest.raises(ValueError) as info:
        bench.load_targets(spec)
    assert message in str(info.value)


def test_targets_file_errors_name_the_file(tmp_path):
    path = tmp_path / "t.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match=f"targets file {path}: not valid JSON"):
        bench.load_targets(path)
    with pytest.raises(OSError):
        bench.load_targets(tmp_path / "missing.json")
    assert bench.load_targets(None) is None
    assert bench.load_targets(TARGETS)["title"] == "Targets (issues 5 and 14)"


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_terminal_gets_a_progress_bar_over_the_cells_and_the_log_above_it(dataset, tmp_path):
    term = _Terminal()
    bench.run((32,), ("float32",), repeats=1, out=tmp_path, quick=True, data=dataset,
              use_torch=False, use_compiled=False, stream=term, stdout=None)
    text = term.getvalue()
    assert "1/1" in text and "cell/s" in text and "100%" in text
    assert "NumPy (manual backprop)" in text          # the per-peer lines still show


# ----------------------------------------------------------------------------------------------
# the compiled peers: torch.compile and JAX jit (a step, and a loop of steps)

@pytest.fixture(scope="module")
def compiled_smoke(dataset, tmp_path_factory):
    """A quick run at B = 32, both dtypes, with the compiled peers that are installed."""
    from fastbn.bench import compiled
    torch = torch_or_none()
    names, notes = compiled.available(torch)
    if not names:
        pytest.skip("; ".join(notes + ["PyTorch is not installed"]))
    out = tmp_path_factory.mktemp("bench-compiled")
    with bench.one_thread(torch):        # (threadpoolctl's import sets KMP_DUPLICATE_LIB_OK)
        env_before = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
        res = bench.run((32,), ("float32", "float64"), repeats=1, out=out, quick=True,
                        data=dataset, stream=None, stdout=None)
    return res, out, names, notes, env_before


def test_the_compiled_peers_are_verified_timed_and_their_compile_time_reported(compiled_smoke):
    res, out, names, notes, _ = compiled_smoke
    assert list(res["implementations"])[-len(names):] == names
    assert all(n in res["notes"] for n in notes)
    for row in res["results"]:
        tol = bench.LOSS_TOL[row["dtype"]]["atol"]
        for name in names:
            v = row["verification"][name]
            assert len(v["losses"]) == bench.VERIFY_STEPS and v["max_loss_diff"] <= tol, name
            t = row["impls"][name]
            assert t["us_per_step"] > 0 and t["compile_seconds"] > 0, name
        assert "compile_seconds" not in row["impls"]["fused"]
    md = (out / "results.md").read_text(encoding="utf-8")
    assert "Compile time, apart from the step times" in md
    for name in names:
        assert bench.IMPLS[name] + " µs" in md


def test_the_compiled_peers_leave_no_process_and_the_environment_as_it_was(compiled_smoke):
    from fastbn.bench import compiled
    *_, names, _, env_before = compiled_smoke
    assert not compiled._SERVERS                       # the JAX processes were ended
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    assert env == env_before          # XLA's settings went to them alone; torch's were undone
    if "jax_jit" in names:
        assert "jax" not in sys.modules                # JAX ran in its own processes


def test_a_missing_jax_is_skipped_with_the_reason(monkeypatch):
    from fastbn.bench import compiled
    monkeypatch.setattr(compiled.importlib.util, "find_spec", lambda name: None)
    names, notes = compiled.available(None)
    assert names == [] and notes == ["JAX skipped: not installed (pip install jax)"]


def test_a_wrong_compiled_peer_fails_verification(dataset, tmp_path, monkeypatch):
    """The compiled peers are held to the fused step like every peer: a wrong learning rate in
    one of them is caught before anything is timed."""
    from fastbn.bench import compiled
    names, _ = compiled.available(torch_or_none())
    if not names:
        pytest.skip("no compiled peer is installed (JAX, PyTorch)")
    name = names[0]
    cls = compiled.PEERS[name]
    real_step = cls.step
    monkeypatch.setattr(cls, "step", lambda self, rows, lr: real_step(self, rows, 2 * lr))
    with pytest.raises(bench.VerificationError, match=re.escape(bench.IMPLS[name])):
        bench.run((32,), ("float32",), repeats=1, out=tmp_path, quick=True, data=dataset,
                  stream=None, stdout=None)
