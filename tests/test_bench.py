"""The benchmark (``fastbn.bench``, ``fastbn bench``, ``bench/run.py``) on a quick smoke run.

It must verify every peer against the fused step before timing, write a readable table, JSON and
chart, and refuse to time a peer that computes something else. No timing assertions here: the
speed targets are checked and reported by the benchmark itself, never by the tests.
Needs names.txt through $FASTBN_DATA (skipped otherwise), like the other real-data tests.
"""
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastbn import bench, reference
from fastbn.cli import main
from fastbn.model import CharMLP

REAL_NAMES = os.environ.get("FASTBN_DATA")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dataset(names):
    return names


def torch_available():
    try:
        import torch  # noqa: F401
    except ImportError:
        return os.environ.get("FASTBN_REQUIRE_TORCH") == "1"    # in CI torch must be there
    return True


@pytest.fixture(scope="module")
def smoke(dataset, tmp_path_factory):
    """One quick run at B = 32 and 64, both dtypes: (results, out dir, printed table)."""
    out = tmp_path_factory.mktemp("bench")
    printed = io.StringIO()
    res = bench.run((32, 64), ("float32", "float64"), repeats=1, out=out, quick=True,
                    data=dataset, stream=None, stdout=printed)
    return res, out, printed.getvalue()


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
    assert m["cpu"]["model"] and m["numpy"] and m["scipy"]
    assert set(res["gemm_peak"]) == {"float32", "float64"}
    assert all(p["gflops"] > 0 for p in res["gemm_peak"].values())
    assert res["full_training"] is None                       # --full is off by default
    assert {t["ok"] for t in res["targets"] if "200,000" in t["target"]} == {None}


def test_smoke_run_writes_table_json_and_chart(smoke):
    res, out, printed = smoke
    md = (out / "results.md").read_text(encoding="utf-8")
    assert md.strip() and md.strip() in printed             # the table is printed too
    for label in res["implementations"].values():
        assert label in md
    assert "## float32" in md and "## float64" in md and "GEMM peak" in md
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
                  data=dataset, stream=None, stdout=None)
    assert not (tmp_path / "results.json").exists() and not (tmp_path / "results.md").exists()


def test_cli_bench_command(dataset, tmp_path, capsys):
    rc = main(["bench", "--quick", "--no-torch", "--batch-sizes", "32", "--dtypes", "float32",
               "--data", REAL_NAMES, "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| 32 |" in out and "fastbn fused loop" in out
    data = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert list(data["implementations"]) == ["fused", "per_layer", "numpy"]
    assert data["settings"]["repeats"] == 1 and data["settings"]["quick"] is True


def test_cli_bench_reports_a_failed_verification(dataset, tmp_path, monkeypatch, capsys):
    _broken_backward(monkeypatch)
    rc = main(["bench", "--quick", "--no-torch", "--batch-sizes", "32", "--dtypes", "float64",
               "--data", REAL_NAMES, "--out", str(tmp_path)])
    assert rc == 1
    assert "fastbn bench: error:" in capsys.readouterr().err


def test_bench_script_help():
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--help"],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    for opt in ("--batch-sizes", "--dtypes", "--repeats", "--out", "--no-torch", "--full",
                "--quick"):
        assert opt in r.stdout
