"""Tests for fastbn.lab: statistics on inputs with known answers, the probe, figures and report,
the CLI, and the lecture's orderings on short runs of the init ladder and the deep net.

Tests that need names.txt read it from $FASTBN_DATA and are skipped when it is not set.
"""
import math
import random
from contextlib import redirect_stdout
from io import StringIO

import numpy as np
import pytest

from fastbn import CharMLP, data, lab, ops, registry
from fastbn.cli import main
from fastbn.registry import NONLINEARITIES

LN27 = math.log(27)
SMALL_VOCAB = data.Vocab(".abcdef")


def tiny_words(n=400, seed=0):
    rng = random.Random(seed)
    return ["".join(rng.choice("abcdefgh") for _ in range(rng.randint(2, 7))) for _ in range(n)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small names file and its Dataset (vocabulary of 9), for runs that need no names.txt."""
    path = tmp_path_factory.mktemp("words") / "words.txt"
    path.write_text("\n".join(tiny_words()) + "\n")
    return path, data.load_dataset(path)


def small_batch(n=64, seed=1):
    rng = np.random.default_rng(seed)
    return rng.integers(0, SMALL_VOCAB.size, (n, 3)), rng.integers(0, SMALL_VOCAB.size, n)


# ----------------------------------------------------------------------------------------------
# statistics with known answers

def test_activation_stats_count_exactly_the_saturated_entries():
    t = np.full((4, 4), 0.5, dtype=np.float32)
    t[0, 0], t[1, 2], t[2, 1], t[3, 3] = 0.98, -0.99, 0.975, -1.0      # 4 of 16 beyond 0.97
    t[0, 1], t[2, 2] = 0.97, -0.97                                      # on the line: not counted
    s = lab.activation_stats(t, "tanh")
    assert s["saturated"] == 0.25
    assert s["mean"] == pytest.approx(float(t.astype(np.float64).mean()), abs=1e-12)
    assert s["std"] == pytest.approx(float(t.astype(np.float64).std()), abs=1e-12)
    relu = np.array([[0.0, 1.0], [0.0, 0.0], [2.0, 0.5], [3.0, 0.0]])
    assert lab.activation_stats(relu, "relu")["saturated"] == 0.5
    assert lab.activation_stats(np.array([-0.01, 0.0, 1.0, -2.0]), "leaky_relu")["saturated"] \
        == 0.5
    with pytest.raises(ValueError, match="kind"):
        lab.activation_stats(t, "gelu")


@pytest.mark.parametrize("kind", NONLINEARITIES)
@pytest.mark.parametrize("threshold", [lab.SATURATED, lab.DEAD])
def test_the_flat_region_is_where_the_local_derivative_is_below_1_minus_threshold_squared(
        kind, threshold):
    """Every activation of the registry, at its default options: its flat region holds the
    outputs whose derivative (the op's own backward of dout = 1) is under 1 - threshold**2
    (tanh's gradient factor at |t| = threshold); leaky ReLU's slope 0.01 is under both."""
    x = np.linspace(-8, 8, 16_001)
    x = x[np.abs(x) > 1e-9]                              # off the kink
    t, cache = getattr(ops, kind + "_forward")(x)
    slope = getattr(ops, kind + "_backward")(np.ones_like(x), cache)
    flat = lab.dead_map(t[None, :], kind, threshold)[0]
    assert flat.any() and not flat.all()
    assert np.all(slope[flat] < 1 - threshold**2) and np.all(slope[~flat] >= 1 - threshold**2)
    assert kind in lab.FLAT_REGION


def test_elu_flat_region_is_where_its_slope_t_plus_alpha_is_under_0_059():
    t = np.array([-0.95, -0.9, 0.5, -0.999, 0.01, 0.0])     # slopes 0.05, 0.1, 1, 0.001, 1, 1
    assert lab.activation_stats(t, "elu")["saturated"] == 2 / 6
    assert lab.FLAT_REGION["elu"] == "t + alpha < 0.0591"
    # alpha 2: the slope is t + 2, under 0.0591 for t < -1.9409
    t2 = np.array([-1.95, -1.9, -0.95, 1.0])
    assert lab.activation_stats(t2, "elu", options={"alpha": 2.0})["saturated"] == 0.25
    # alpha under the cutoff: every x <= 0 is flat (never a positive output)
    t3 = np.array([-0.01, 0.0, 0.02, 3.0])
    assert lab.dead_map(t3[None], "elu", lab.SATURATED, options={"alpha": 0.03})[0].tolist() == \
        [True, True, False, False]


@pytest.mark.parametrize("kind", NONLINEARITIES)
def test_the_probe_reads_every_activation_of_the_registry(kind):
    m = CharMLP(SMALL_VOCAB, n_embd=4, n_hidden=16, n_layers=2, activation=kind, seed=0)
    probe = lab.Probe(m)
    snap = probe.measure(*small_batch())
    assert [k for _, k, _ in probe.nonlinear] == [kind, kind]
    for (_, _, layer), a in zip(probe.nonlinear, snap.activations.values()):
        options = registry.layer_options(registry.ACTIVATIONS[kind], layer)
        want = registry.ACTIVATIONS[kind].flat(layer.out, lab.SATURATED, **options)
        assert a["kind"] == kind and a["saturated"] == want.mean()
        assert a["dead"] == lab.dead_units(layer.out, kind, options=options).sum()


def test_a_unit_dead_for_all_rows_is_found_and_only_it():
    rng = np.random.default_rng(0)
    t = np.tanh(rng.standard_normal((32, 6))).astype(np.float32)
    t[:, 2] = 0.995                       # dead: beyond 0.99 on every row
    t[:, 4] = -0.999
    t[7, 4] = 0.5                         # saturated on all rows but one: alive
    assert lab.dead_units(t).tolist() == [False, False, True, False, False, False]
    m = lab.dead_map(t)
    assert m.shape == (32, 6) and m[:, 2].all() and m[:, 4].sum() == 31
    r = np.maximum(rng.standard_normal((10, 3)), 0)
    r[:, 1] = 0.0
    assert lab.dead_units(r, "relu").tolist() == [False, True, False]


def test_grad_data_and_update_data_ratios_of_a_known_gradient():
    rng = np.random.default_rng(0)
    p = rng.standard_normal((30, 200))
    g = 0.02 * p + 5.0                                   # std(g) = 0.02 std(p); the shift is free
    assert lab.grad_data_ratio(g, p) == pytest.approx(0.02, rel=1e-12)
    assert lab.update_data_ratio(g, p, lr=0.05) == pytest.approx(-3.0, abs=1e-12)
    assert math.isnan(lab.grad_data_ratio(g, np.zeros_like(p)))     # a zeroed bias
    assert math.isnan(lab.update_data_ratio(np.zeros_like(p), p, 0.1))


def test_initial_loss_verdicts_in_words():
    ok = lab.initial_loss_check(3.30, 27)
    assert ok.expected == pytest.approx(LN27) and ok.verdict == "as expected"
    wrong = lab.initial_loss_check(27.0, 27)
    assert wrong.verdict == "confidently wrong" and "confidently wrong" in wrong.explain()
    assert "8.2x" in wrong.explain()
    assert lab.initial_loss_check(4.0, 27).verdict == "too high"
    assert lab.initial_loss_check(2.5, 27).verdict == "below chance level"
    assert lab.initial_loss_check(float("nan"), 27).verdict == "not a number"


def test_format_table_text_and_markdown():
    rows = [["a", "1.0"], ["long name", "22"]]
    text = lab.format_table(["x", "value"], rows)
    assert text.splitlines()[0].split() == ["x", "value"]
    assert text.splitlines()[3].startswith("long name") and text.splitlines()[3].endswith("22")
    md = lab.format_table(["x", "value"], rows, markdown=True)
    assert md.splitlines() == ["| x | value |", "|---|---|", "| a | 1.0 |", "| long name | 22 |"]


# ----------------------------------------------------------------------------------------------
# the probe

def test_probe_records_what_the_layers_hold():
    m = CharMLP(SMALL_VOCAB, n_embd=4, n_hidden=16, n_layers=2, seed=0)
    probe = lab.Probe(m, every=1)
    X, Y = small_batch()
    loss = m.train_step(X, Y, 0.1)
    snap = probe(0, loss, 0.1)
    tanhs = [layer for layer in m.layers if type(layer).__name__ == "Tanh"]
    assert list(snap.activations) == ["hidden layer 1 (Tanh)", "hidden layer 2 (Tanh)"]
    for (label, a), layer in zip(snap.activations.items(), tanhs):
        ref = lab.activation_stats(layer.out, "tanh")
        assert {k: a[k] for k in ref} == ref
        assert a["dead"] == int(lab.dead_units(layer.out).sum()) and a["units"] == 16
        assert snap.gradients[label]["std"] == pytest.approx(float(layer.dout.std()), rel=1e-6)
        assert a["hist"][0].sum() == layer.out.size
    named = dict(m.named_parameters())
    assert list(snap.weights) == [n for n, p in named.items() if p.ndim == 2]
    grads = dict(zip(named, m.grads()))
    for n, p in named.items():
        want = lab.update_data_ratio(grads[n], p, 0.1)
        assert snap.updates[n] == pytest.approx(want, nan_ok=True)
    assert snap.weights["1.weight"]["grad_data"] == pytest.approx(
        lab.grad_data_ratio(grads["1.weight"], named["1.weight"]))
    # the compiled loop does not run the layers: recording again without a step is refused
    with pytest.raises(RuntimeError, match="fused=False"):
        probe(1, loss, 0.1)
    m.train_step(X, Y, 0.1)
    probe(1, loss, 0.1)
    m.train_step(X, Y, 0.1)
    probe(2, loss, 0.1)
    assert [s.maps is not None for s in probe.snapshots] == [True, False, True]
    steps, std = probe.series("activations", "hidden layer 1 (Tanh)", "std")
    assert steps.tolist() == [0, 1, 2] and std.shape == (3,)


def test_measure_changes_nothing_in_the_model():
    m = CharMLP(SMALL_VOCAB, n_embd=4, n_hidden=16, seed=0)
    before = [a.copy() for a in m.parameters()] + [b.copy() for _, b in m.named_buffers()]
    snap = lab.Probe(m).measure(*small_batch(), lr=0.1)
    after = list(m.parameters()) + [b for _, b in m.named_buffers()]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert snap.loss == pytest.approx(float(m.train().forward(*small_batch())), rel=1e-6)


@pytest.mark.parametrize("activation, bias", [("tanh", 10.0), ("relu", -1.0)])
def test_dead_units_on_a_whole_split(activation, bias):
    m = CharMLP(SMALL_VOCAB, n_embd=4, n_hidden=8, batchnorm=False, activation=activation,
                seed=0)
    X, _ = small_batch(500)
    assert list(lab.dead_units_on_split(m, X, chunk=128).values()) == [(0, 8)]
    m.layers[1].weight[:, 5] = 0          # unit 5: constant tanh(10) = 1, or relu(-1) = 0
    m.layers[1].bias[5] = bias
    assert list(lab.dead_units_on_split(m, X, chunk=128).values()) == [(1, 8)]


def test_gain_option_scales_the_kaiming_weights():
    a = CharMLP(SMALL_VOCAB, n_embd=4, n_hidden=8, n_layers=2, seed=3)
    b = CharMLP(SMALL_VOCAB, n_embd=4, n_hidden=8, n_layers=2, seed=3, gain=3.0)
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        scale = 3.0 / (5 / 3) if n in ("1.weight", "4.weight") else 1.0
        np.testing.assert_allclose(q, p * scale, rtol=1e-6, atol=0, err_msg=n)
    assert b.config["gain"] == 3.0 and a.config["gain"] is None
    with pytest.raises(ValueError, match="kaiming"):
        CharMLP(SMALL_VOCAB, init="original", gain=1.0)


def test_measure_overhead_reports_the_cost_of_recording():
    # what it costs is a measurement (the docs' figure), not a test: here, that it measures
    m = CharMLP(data.Vocab(".abcdefghijklmnopqrstuvwxyz"), seed=0)     # the default model
    rng = np.random.default_rng(0)
    X, Y = rng.integers(0, 27, (5000, 3)), rng.integers(0, 27, 5000)
    r = lab.measure_overhead(m, X, Y, every=100, steps=300, repeats=2)
    assert set(r) == {"plain_s", "probed_s", "overhead", "record_ms", "step_us"}
    assert r["plain_s"] > 0 and r["probed_s"] > 0 and r["record_ms"] > 0 and r["step_us"] > 0
    assert r["overhead"] == pytest.approx(r["probed_s"] / r["plain_s"] - 1)


# ----------------------------------------------------------------------------------------------
# figures, report, CLI

def _readable_png(path):
    import matplotlib.image
    img = matplotlib.image.imread(path)
    return img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100 and img.std() > 0


def test_run_lab_writes_readable_figures_tables_and_a_report_that_links_them(tiny, tmp_path):
    _, ds = tiny
    res = lab.run_lab(ds, tmp_path, steps=120, every=20, n_hidden=32, n_layers=2)
    assert set(res.files) == {"activations", "gradients", "weight_grads", "update_ratio",
                              "dead_units", "activations_over_training", "loss"}
    assert set(res.figures) == set(res.files)
    report = res.report.read_text()
    for path in res.files.values():
        assert path.parent == tmp_path and path.stat().st_size > 5000
        assert _readable_png(path), path
        assert f"]({path.name})" in report
    assert [s.step for s in res.probe.snapshots] == [0, 20, 40, 60, 80, 100, 119]
    assert "Initial loss" in report and "Dead units" in report and "update:data" in report
    stats = (tmp_path / "stats.txt").read_text()
    assert "hidden layer 1 (Tanh)" in stats and "grad:data" in stats
    assert "hidden layer 2 (Tanh)" in stats and "layer 3" not in stats and "layer 6" not in stats
    assert "hidden layer 1 weight (1.weight)" in stats and "output weight (7.weight)" in stats
    assert (tmp_path / "stats.md").read_text().count("|---|") >= 5
    assert res.loss_check.verdict == "as expected"


def test_run_lab_init_only_in_svg(tiny, tmp_path):
    _, ds = tiny
    res = lab.run_lab(ds, tmp_path, steps=0, fmt="svg", activation="relu", batchnorm=False,
                      init="fix_tanh")
    assert len(res.probe.snapshots) == 1 and res.history is None
    assert {p.suffix for p in res.files.values()} == {".svg"}
    assert all(p.read_text().lstrip().startswith("<?xml") for p in res.files.values())
    assert "t == 0" in (tmp_path / "report.md").read_text()


def test_run_lab_without_a_folder_writes_nothing_and_returns_figures_and_html(
        tiny, tmp_path, monkeypatch):
    from matplotlib.figure import Figure
    _, ds = tiny
    monkeypatch.chdir(tmp_path)
    res = lab.run_lab(ds, steps=40, every=20, n_hidden=16)
    assert list(tmp_path.iterdir()) == [] and res.files == {} and res.report is None
    assert set(res.figures) == {"activations", "gradients", "weight_grads", "update_ratio",
                                "dead_units", "activations_over_training", "loss"}
    assert all(isinstance(f, Figure) for f in res.figures.values())
    page = res._repr_html_()
    # every figure embedded as a PNG, the findings and the tables as HTML
    assert page.count('src="data:image/png;base64,') == len(res.figures)
    assert "<h3>Initial loss</h3>" in page and "<table>" in page and "<li>" in page
    assert "stats.md" not in page                # no link to files that were not written
    md = res.markdown()
    assert md.count("](data:image/png;base64,") == len(res.figures)
    assert len(repr(res)) < 300 and "40 steps" in repr(res)


def test_plot_functions_return_figures_and_save_when_given_a_path(tiny, tmp_path):
    from matplotlib.figure import Figure
    _, ds = tiny
    res = lab.run_lab(ds, steps=40, every=20, n_hidden=16)
    snap, probe = res.probe.last, res.probe
    for plot, arg in ((lab.plot_activations, snap), (lab.plot_gradients, snap),
                      (lab.plot_weight_grads, snap), (lab.plot_update_ratios, probe),
                      (lab.plot_dead_units, probe), (lab.plot_activations_over_training, probe),
                      (lab.plot_loss, res.history)):
        fig = plot(arg)
        assert isinstance(fig, Figure) and fig.axes, plot.__name__
        path = tmp_path / f"{plot.__name__}.png"
        assert isinstance(plot(arg, path), Figure) and _readable_png(path), plot.__name__
    assert not list(tmp_path.glob(".*"))         # no temporary files left behind


def test_lab_reprs_are_short(tiny):
    _, ds = tiny
    res = lab.run_lab(ds, steps=40, every=20, n_hidden=16, n_layers=3)
    for obj in (res, res.probe, res.probe.last, res.loss_check):
        assert len(repr(obj)) < 300, repr(obj)
    assert repr(res.probe.last).startswith("Snapshot(step 39")
    assert "snapshots" in repr(res.probe)


def test_markdown_to_html_renders_the_report_subset():
    from fastbn.lab.report import markdown_to_html
    page = markdown_to_html("# T\n\nsome **bold** <x>\n\n- a [l](u)\n- b\n\n"
                            "| h1 | h2 |\n|---|---|\n| 1 | 2 |\n\n![alt](data:x)\n")
    assert "<h2>T</h2>" in page and "<strong>bold</strong> &lt;x&gt;" in page
    assert '<ul><li>a <a href="u">l</a></li><li>b</li></ul>' in page
    assert "<th>h1</th><th>h2</th>" in page and "<td>1</td><td>2</td>" in page
    assert '<img alt="alt" src="data:x"' in page


def test_cli_lab_and_lab_ladder(tiny, tmp_path, capsys):
    path, _ = tiny
    rc = main(["lab", "--data", str(path), "--steps", "50", "--every", "10",
               "--n-hidden", "16", "--out", str(tmp_path / "lab"), "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 0 and "as expected" in out and "% overhead" in out
    assert (tmp_path / "lab" / "report.md").is_file() and err == ""
    rc = main(["lab", "ladder", "--data", str(path), "--steps", "20", "--deep-steps", "5",
               "--out", str(tmp_path / "ladder"), "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 0
    # --quiet: no progress at all, the trials' "[1/11] ..." lines included
    assert "[1/" not in err and "initial loss" not in err and "deep net" not in err
    for name in ("original", "fix_softmax", "fix_tanh", "kaiming", "batchnorm", "no BN, gain 3"):
        assert name in out
    report = (tmp_path / "ladder" / "ladder.md").read_text()
    figs = sorted(p.name for p in (tmp_path / "ladder").glob("*.png"))
    assert "ladder_init.png" in figs and "deep_activations_init.png" in figs
    assert all(f"]({f})" in report for f in figs)


@pytest.mark.parametrize("variance, unbiased", [("biased", False), ("unbiased", True)])
def test_cli_lab_trains_the_batch_norm_variant_it_is_given(tiny, tmp_path, variance, unbiased):
    path, _ = tiny
    with redirect_stdout(StringIO()):
        rc = main(["lab", "--data", str(path), "--steps", "0", "--n-hidden", "16",
                   "--bn-variance", variance, "--out", str(tmp_path), "--quiet"])
    assert rc == 0
    assert f"bn_unbiased={unbiased}" in (tmp_path / "report.md").read_text()


def test_cli_lab_refuses_to_replace_a_report_unless_forced(tiny, tmp_path, capsys):
    path, _ = tiny
    args = ["lab", "--data", str(path), "--steps", "0", "--n-hidden", "16", "--out",
            str(tmp_path), "--quiet"]
    assert main(args) == 0
    before = (tmp_path / "report.md").read_text()
    with pytest.raises(SystemExit) as e:
        main([*args, "--seed", "3"])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"fastbn lab: error: --out {tmp_path} already holds a report (report.md, stats.txt, "
        "stats.md): replace it with --force, or choose another folder with --out")
    assert (tmp_path / "report.md").read_text() == before
    assert main([*args, "--seed", "3", "--force"]) == 0
    assert "seed 3" in (tmp_path / "report.md").read_text()


def test_cli_lab_checks_its_folder_before_training(tiny, tmp_path, capsys, monkeypatch):
    import tempfile

    path, _ = tiny

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(tempfile, "TemporaryFile", denied)
    monkeypatch.setattr(lab, "run_lab", lambda *a, **k: pytest.fail("trained"))
    for sub in ([], ["ladder"], ["robustness"]):
        assert main(["lab", *sub, "--data", str(path), "--out", str(tmp_path / "o"),
                     "--quiet"]) == 1
        err = capsys.readouterr().err
        prog = " ".join(["fastbn lab", *sub])
        assert err == (f"{prog}: error: cannot write to the output folder {tmp_path / 'o'}: "
                       "Permission denied\n")


def test_cli_lab_keeps_what_it_computed_when_a_figure_cannot_be_written(tiny, tmp_path, capsys,
                                                                        monkeypatch):
    """An OSError after training is one line saying what was written; the tables and the
    report come first (and the tables are printed), so the run's numbers are not lost."""
    from fastbn.lab import experiments
    path, _ = tiny
    out = tmp_path / "lab"

    def disk_full(fig, where):
        raise OSError(28, "No space left on device", str(where))
    monkeypatch.setattr(experiments, "save_figure", disk_full)
    assert main(["lab", "--data", str(path), "--steps", "20", "--every", "10", "--n-hidden",
                 "16", "--out", str(out), "--quiet"]) == 1
    printed, err = capsys.readouterr()
    assert err == (f"fastbn lab: error: cannot write {out / 'activations.png'}: No space left "
                   "on device; written before it: stats.txt, stats.md, report.md\n")
    assert "hidden layer 1 (Tanh)" in printed
    assert (out / "stats.txt").read_text() in printed
    assert "](activations.png)" in (out / "report.md").read_text()
    assert main(["lab", "ladder", "--data", str(path), "--steps", "0", "--deep-steps", "0",
                 "--out", str(tmp_path / "ladder"), "--quiet"]) == 1
    printed, err = capsys.readouterr()
    ladder_init = tmp_path / "ladder" / "ladder_init.png"
    assert err == (f"fastbn lab ladder: error: cannot write {ladder_init}: "
                   "No space left on device; written before it: ladder.txt, ladder.md\n")
    assert "fix_softmax" in printed and (tmp_path / "ladder" / "ladder.md").is_file()


def test_robustness_writes_its_report_before_its_figure(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from fastbn.lab import robustness

    def disk_full(fig, where):
        raise OSError(28, "No space left on device", str(where))
    monkeypatch.setattr(robustness, "save_figure", disk_full)
    m = SimpleNamespace(figure=None, files={}, markdown=lambda name: f"![map]({name})\n")
    with pytest.raises(lab.WriteError) as e:
        robustness.write_robustness(m, tmp_path)
    assert e.value.written == [tmp_path / "robustness.md"] and e.value.errno == 28
    assert e.value.filename == str(tmp_path / "robustness.png")
    assert (tmp_path / "robustness.md").read_text() == "![map](robustness.png)\n"


def test_cli_lab_usage_errors(tiny, capsys):
    path, _ = tiny
    with pytest.raises(SystemExit) as e:
        main(["lab", "--data", str(path), "--init", "original", "--gain", "2"])
    assert e.value.code == 2 and "--gain" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["lab", "ladder", "--data", "/nonexistent/names.txt"])
    assert e.value.code == 2 and "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["lab", "--data", str(path), "--bn-variance", "sample"])
    assert e.value.code == 2 and "--bn-variance" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# the lecture's orderings, on short runs of the real data

@pytest.fixture(scope="module")
def ladder(names):
    return {r.name: r for r in lab.run_ladder(names, steps=200)}


def test_ladder_initial_losses(ladder):
    assert ladder["original"].init.loss > 3 * LN27           # confidently wrong (lecture: ~27)
    for name in ("fix_softmax", "fix_tanh", "kaiming", "batchnorm"):
        assert abs(ladder[name].init.loss - LN27) < 0.1, name


def test_ladder_tanh_at_init(ladder):
    default = ladder["batchnorm"].tanh          # the default model: Kaiming init + BatchNorm
    assert 0.55 <= default["std"] <= 0.75 and default["saturated"] <= 0.05
    sat = {n: r.tanh["saturated"] for n, r in ladder.items()}
    assert sat["original"] == sat["fix_softmax"] > 0.5      # same W1: the softmax fix leaves it
    assert sat["original"] > sat["kaiming"] > sat["fix_tanh"] > sat["batchnorm"]


def test_ladder_short_training_orders_the_losses(ladder):
    val = {n: r.losses["val"] for n, r in ladder.items()}
    assert val["original"] > max(v for n, v in val.items() if n != "original") + 1
    assert all(v < ladder[n].init.loss for n, v in val.items())


def test_deep_net_batchnorm_keeps_tanh_at_065_and_the_gain_decides_without_it(names):
    deep = {r.name: r for r in lab.run_deep(names, steps=100)}
    for name, r in deep.items():
        if name.startswith("BN"):
            for snap in (r.init, r.final):
                for a in snap.activations.values():
                    assert 0.60 <= a["std"] <= 0.70 and a["saturated"] < 0.05, name
            assert r.verdict() == "about right"
    assert deep["no BN, gain 1"].verdict().startswith("too small")
    assert deep["no BN, gain 5/3"].verdict() == "about right"
    assert deep["no BN, gain 3"].verdict().startswith("too large")
