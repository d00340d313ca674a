"""The benchmark's inference rows (``fastbn.bench.inference``) on a quick run: structure, the
verification that precedes timing, the report and the targets. No speed is asserted here."""
import io
import json
import os

import pytest

from fastbn import bench, folding
from fastbn.bench import inference, report
from fastbn.bench.verify import VerificationError


def _torch():
    try:
        import torch
    except ImportError:
        if os.environ.get("FASTBN_REQUIRE_TORCH") == "1":
            raise
        return None
    return torch


@pytest.fixture(scope="module")
def quick(names):
    torch = _torch()
    with bench.one_thread(torch):
        return inference.run_inference(names, ["float32", "float64"], seed=1, repeats=2,
                                       block_seconds=0.005, torch_mod=torch, quick=True), torch


def test_quick_run_verifies_then_reports_every_peer_and_task(quick):
    inf, torch = quick
    peers = ["unfolded", "folded_bn", "folded"] + (["torch"] if torch else [])
    assert list(inf["implementations"]) == peers
    assert inf["examples"] == inference.QUICK_EXAMPLES and inf["sample_n"] == 20
    assert inf["train_steps"] == inference.QUICK_TRAIN_STEPS
    assert [(r["dtype"], r["task"]) for r in inf["results"]] == [
        ("float32", "eval"), ("float32", "sample"), ("float64", "eval"), ("float64", "sample")]
    for r in inf["results"]:
        assert r["unit"] == inference.TASKS[r["task"]]
        assert list(r["impls"]) == peers
        count = inf["examples"] if r["task"] == "eval" else inf["sample_n"]
        for k, t in r["impls"].items():
            assert t["seconds"] > 0 and len(t["seconds_all"]) == 2
            assert t["rate"] == pytest.approx(count / t["seconds"])
            assert t["speedup"] == pytest.approx(t["rate"] / r["impls"]["unfolded"]["rate"])
            v = r["verification"][k]
            assert v["loss_diff"] <= inference.LOSS_TOL[r["dtype"]]
            assert v["names_differing"] <= (1 if r["dtype"] == "float32" else 0)
        assert r["impls"]["unfolded"]["speedup"] == 1.0
    for dt in ("float32", "float64"):              # what was folded, and that the table is used
        assert inf["folded"][dt].startswith("1 BatchNorm1d into the Linear before it; the "
                                            "Embedding and Linear (1) into a table (3, 27, 200)")
    json.dumps(inf)                                      # results.json can hold it


def test_the_report_has_the_inference_table(quick):
    inf, _ = quick
    text = "\n".join(inference.markdown(inf))
    assert "## Inference (eval mode)" in text
    for dt in ("float32", "float64"):
        assert f"| {dt} | eval (examples/s) |" in text and f"| {dt} | sample (names/s) |" in text
    assert text.count("(1.00×)") == 4                     # the unfolded model's own column
    slow = {k: [0.5] for k in ("cpu_share",)}
    first = inf["results"][0]["impls"]["folded"]
    flagged = {**inf, "results": [{**inf["results"][0],
                                   "impls": {**inf["results"][0]["impls"],
                                             "folded": {**first, **slow}}}]}
    text = "\n".join(inference.markdown(flagged))
    assert f"{first['rate']:,.0f}† (" in text and "† a timed block" in text


@pytest.mark.parametrize("broken, peer", [(None, "folded"), (False, "folded_bn")])
def test_a_wrong_folded_model_fails_verification_and_nothing_is_timed(names, monkeypatch, broken,
                                                                      peer):
    real = folding.fold_batchnorm

    def wrong(model, table=None):
        f = real(model, table=table)
        if table is broken:              # one of the two folded peers
            w = f.layers[-1].bias
            w.flags.writeable = True
            w[1] += 0.01                 # one logit moves (softmax ignores a shift of all)
        return f
    monkeypatch.setattr(folding, "fold_batchnorm", wrong)
    timed = []
    monkeypatch.setattr(inference, "_time", lambda *a, **k: timed.append(a))
    with pytest.raises(VerificationError, match=f"{inference.IMPLS[peer]} gives the val loss"):
        inference.run_inference(names, ["float64"], seed=1, repeats=1, block_seconds=0.001,
                                quick=True)
    assert not timed


def test_bench_run_includes_the_inference_section(names, tmp_path):
    printed = io.StringIO()
    targets = {"title": "Inference goals", "targets": [
        {"metric": "inference_speedup", "dtype": "float32", "task": "eval", "min": 1.5},
        {"metric": "inference_rate", "dtype": "float32", "task": "sample", "peer": "unfolded",
         "min": 1e-9},
        {"metric": "inference_speedup", "dtype": "float64", "task": "eval", "min": 1.5}]}
    res = bench.run((32,), ("float32",), repeats=1, out=tmp_path, quick=True, data=names,
                    use_torch=False, use_compiled=False, targets=targets, stream=None,
                    stdout=printed)
    assert res["inference"]["results"][0]["dtype"] == "float32"
    md = (tmp_path / "results.md").read_text(encoding="utf-8")
    assert "## Inference (eval mode)" in md and printed.getvalue() == md + "\n"
    saved = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert saved["inference"]["implementations"] == res["inference"]["implementations"]
    assert report.markdown(saved) == md                 # the report is made from the JSON
    speedup = res["inference"]["results"][0]["impls"]["folded"]["speedup"]
    v = res["targets"]
    assert v[0]["value"] == speedup and v[0]["ok"] == (speedup >= 1.5)
    assert v[0]["target"] == ("float32 eval: fastbn, folded >= 1.5x the unfolded model's "
                              "examples/s")
    assert v[1]["ok"] is True and v[1]["measured"].endswith("names/s")
    assert v[2]["ok"] is None and v[2]["measured"] is None      # float64 was not run


def _res(rates):
    """A results dict with only inference rows {(dtype, task): {peer: rate}}."""
    rows = [{"dtype": dt, "task": task, "unit": inference.TASKS[task],
             "impls": {k: {"rate": v, "speedup": v / cell["unfolded"]} for k, v in cell.items()}}
            for (dt, task), cell in rates.items()]
    return {"results": [], "full_training": None, "inference": {"results": rows}}


def test_inference_targets_are_judged_by_their_bounds():
    res = _res({("float32", "eval"): {"unfolded": 100.0, "folded": 140.0, "torch": 90.0}})
    t = bench.load_targets([
        {"metric": "inference_speedup", "dtype": "float32", "task": "eval", "min": 1.5},
        {"metric": "inference_speedup", "dtype": "float32", "task": "eval", "min": 1.3},
        {"metric": "inference_speedup", "dtype": "float32", "task": "eval", "peer": "torch",
         "max": 1.0},
        {"metric": "inference_rate", "dtype": "float32", "task": "eval", "min": 150},
        {"metric": "inference_rate", "dtype": "float32", "task": "sample", "min": 1}])
    out = bench.judge(res, t)
    assert [o["ok"] for o in out] == [False, True, True, False, None]
    assert out[0]["value"] == pytest.approx(1.4) and out[0]["measured"] == "1.40x"
    assert out[3]["measured"] == "140 examples/s"
    assert t["targets"][0]["peer"] == "folded"          # the default peer
    assert bench.judge({"results": [], "full_training": None}, t)[0]["ok"] is None


@pytest.mark.parametrize("spec, message", [
    ({"metric": "inference_speedup", "task": "eval", "min": 1.5}, "needs dtype"),
    ({"metric": "inference_speedup", "dtype": "float32", "min": 1.5}, "needs task"),
    ({"metric": "inference_speedup", "dtype": "float16", "task": "eval", "min": 1.5},
     "dtype must be"),
    ({"metric": "inference_speedup", "dtype": "float32", "task": "train", "min": 1.5},
     "task must be one of eval, sample"),
    ({"metric": "inference_speedup", "dtype": "float32", "task": "eval", "peer": "unfolded",
      "min": 1.5}, "peer must be one of"),
    ({"metric": "inference_rate", "dtype": "float32", "task": "eval", "peer": "jax",
      "min": 1.5}, "peer must be one of"),
    ({"metric": "inference_rate", "dtype": "float32", "task": "eval", "batch_size": 32,
      "min": 1}, "unknown key"),
    ({"metric": "inference_rate", "dtype": "float32", "task": "eval"}, "exactly one bound"),
])
def test_bad_inference_targets_are_refused_with_the_reason(spec, message):
    with pytest.raises(ValueError, match=message):
        bench.load_targets([spec])
