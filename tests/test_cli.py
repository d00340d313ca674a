"""Tests for the ``fastbn`` command: train / eval / sample on short runs, usage errors, gradcheck.

The commands run in-process through ``fastbn.cli.main`` and once through ``python -m fastbn``.
Tests that need names.txt read it from $FASTBN_DATA and are skipped when it is not set.
"""
import argparse
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastbn
import fastbn.checkpoint
import fastbn.data
from fastbn.cli import build_parser, main

REAL_NAMES = os.environ.get("FASTBN_DATA")


@pytest.fixture(scope="module")
def short_run(names_path, tmp_path_factory):
    """One short `fastbn train` shared by the eval and sample tests: (out dir, its stdout)."""
    out = tmp_path_factory.mktemp("run")
    from contextlib import redirect_stdout
    from io import StringIO
    buf = StringIO()
    with redirect_stdout(buf):
        rc = main(["train", "--data", names_path, "--steps", "400", "--seed", "1",
                   "--out", str(out), "--quiet"])
    assert rc == 0
    return out, buf.getvalue()


def losses_in(text):
    return {k: float(v) for k, v in re.findall(r"(train|val|test) (\d+\.\d+)", text)}


def test_train_prints_losses_time_and_paths(short_run):
    out, stdout = short_run
    losses = losses_in(stdout)
    assert set(losses) == {"train", "val", "test"}
    assert all(2.0 < v < 3.0 for v in losses.values())
    assert re.search(r"wall time \d+\.\d s \(\d+ us/step, fused path\)", stdout)
    assert f"checkpoint {out / 'model.npz'}" in stdout
    assert (out / "model.npz").is_file()
    if (out / "loss.png").exists():            # matplotlib installed
        assert f"loss plot {out / 'loss.png'}" in stdout
    m = fastbn.load(out / "model.npz")
    assert m.num_parameters() == 12_097
    assert m.meta["run"]["steps"] == 400 and m.meta["run"]["seed"] == 1
    # the lecture's schedule scaled to the run: 0.01 from half its 400 steps on
    assert m.meta["run"]["lr_schedule"] == "0:0.1,200:0.01" and m.meta["complete"]
    assert m.train_state.step == 400
    assert m.meta["run"]["data"] == str(Path(REAL_NAMES).resolve())
    assert m.meta["run"]["data_sha256"] == fastbn.data.sha256_file(REAL_NAMES)


def test_eval_reports_the_same_losses(short_run, names_path, capsys):
    out, stdout = short_run
    assert main(["eval", "--checkpoint", str(out / "model.npz"), "--data", names_path]) == 0
    assert losses_in(capsys.readouterr().out) == losses_in(stdout)


def test_eval_with_calibration_reports_both(short_run, names_path, capsys):
    out, _ = short_run
    assert main(["eval", "--checkpoint", str(out / "model.npz"), "--data", names_path,
                 "--calibrate"]) == 0
    text = capsys.readouterr().out
    assert "running BN statistics" in text and "calibrated BN statistics" in text


def test_sample_is_reproducible(short_run, capsys):
    out, _ = short_run
    args = ["sample", "--checkpoint", str(out / "model.npz"), "-n", "7", "--seed", "3"]
    assert main(args) == 0
    first = capsys.readouterr().out.splitlines()
    assert main(args) == 0
    assert capsys.readouterr().out.splitlines() == first
    assert len(first) == 7 and all(re.fullmatch(r"[a-z]*", s) for s in first)
    assert main(args[:-1] + ["4"]) == 0
    assert capsys.readouterr().out.splitlines() != first


def test_train_options_reach_the_model(names_path, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", names_path, "--steps", "20", "--batch-size", "8",
                 "--n-hidden", "16", "--n-embd", "5", "--block-size", "4", "--n-layers", "2",
                 "--bn-momentum", "0.1", "--dtype", "float64", "--lr-schedule", "0:0.05,10:0.01",
                 "--calibrate", "--no-plot", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "calibrated BN statistics" in text and not (out / "loss.png").exists()
    m = fastbn.load(out / "model.npz")
    assert m.dtype == np.float64 and m.block_size == 4
    assert (m.config["n_hidden"], m.config["n_embd"], m.config["n_layers"]) == (16, 5, 2)
    assert m.batchnorms()[0].momentum == 0.1 and m.meta["calibrated"]
    assert m.meta["run"]["lr_schedule"] == "0:0.05,10:0.01" and m.meta["run"]["batch_size"] == 8


@pytest.mark.parametrize("variance", ["unbiased", "biased", None])
def test_train_bn_variance_reaches_the_model_and_its_checkpoint(tmp_path, capsys, variance):
    """--bn-variance unbiased trains the lecture's batch norm (on the fused path) and saves it
    in the checkpoint; biased, or no flag, is the default."""
    out = tmp_path / "run"
    flag = ["--bn-variance", variance] if variance else []
    assert main(["train", "--data", str(words_file(tmp_path)), "--steps", "30", "--batch-size",
                 "8", "--n-hidden", "8", "--no-plot", "--out", str(out)] + flag) == 0
    text = capsys.readouterr().out
    m = fastbn.load(out / "model.npz")
    unbiased = variance == "unbiased"
    assert m.config["bn_unbiased"] is unbiased
    assert all(bn.unbiased is unbiased for bn in m.batchnorms())
    assert ("BN with the unbiased variance" in text) == unbiased and "fused path" in text


def test_a_resumed_run_keeps_its_bn_variance(tmp_path):
    """A run with --bn-variance unbiased stopped at step 20 of 40 and resumed (the flag is then
    refused, the checkpoint says): the same losses and parameters as the whole run, which are
    not those of the default variance."""
    words = words_file(tmp_path)
    # one schedule for both lengths (the default one scales with --steps)
    run = ["--data", str(words), "--batch-size", "8", "--n-hidden", "8", "--no-plot", "--quiet",
           "--lr-schedule", "0:0.1,30:0.01"]
    outs = {k: tmp_path / k for k in ("part", "whole", "biased")}
    assert main(["train", "--steps", "20", "--bn-variance", "unbiased", *run,
                 "--out", str(outs["part"])]) == 0
    ckpt = outs["part"] / "model.npz"
    m = fastbn.checkpoint.load(ckpt)
    m.meta["run"]["steps"] = 40                      # as a run stopped at step 20 leaves it
    del m.meta["complete"]
    fastbn.checkpoint.save(m, ckpt, meta=m.meta, state=m.train_state)
    assert main(["train", "--resume", str(ckpt), "--quiet", "--no-plot"]) == 0
    assert main(["train", "--steps", "40", "--bn-variance", "unbiased", *run,
                 "--out", str(outs["whole"])]) == 0
    assert main(["train", "--steps", "40", *run, "--out", str(outs["biased"])]) == 0
    resumed, whole, biased = (fastbn.load(outs[k] / "model.npz") for k in outs)
    assert resumed.config["bn_unbiased"] is True and resumed.train_state.step == 40
    np.testing.assert_array_equal(resumed.train_state.history, whole.train_state.history)
    for a, b in zip(resumed.parameters(), whole.parameters()):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(whole.train_state.history, biased.train_state.history)


def words_file(folder):
    words = folder / "words.txt"
    words.write_text("\n".join(["anna", "bob", "otto", "ada", "abba", "nan"] * 20) + "\n")
    return words


def test_train_without_batchnorm_on_a_custom_word_file(tmp_path, capsys):
    words = words_file(tmp_path)
    out = tmp_path / "run"
    assert main(["train", "--data", str(words), "--steps", "30", "--batch-size", "1",
                 "--no-batchnorm", "--n-hidden", "8", "--no-plot", "--out", str(out),
                 "--quiet"]) == 0
    m = fastbn.load(out / "model.npz")
    assert m.vocab.chars == ".abdnot" and not m.batchnorms()
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(out / "model.npz"), "-n", "5"]) == 0
    assert all(set(s) <= set("abdnot") for s in capsys.readouterr().out.splitlines())


def test_eval_refuses_data_with_another_vocabulary(short_run, tmp_path, capsys):
    out, _ = short_run
    words = tmp_path / "words.txt"
    words.write_text("abc\ncab\n")
    assert main(["eval", "--checkpoint", str(out / "model.npz"), "--data", str(words)]) == 1
    err = capsys.readouterr().err
    assert "fastbn eval: error:" in err and "vocabulary" in err


def test_runtime_errors_exit_1_with_a_message(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_text("not a checkpoint")
    assert main(["sample", "--checkpoint", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "fastbn sample: error:" in err and "not a valid fastbn checkpoint" in err
    out = tmp_path / "diverged"
    # lr 1e39 is +inf in float32 (the default dtype): step 20's update makes every parameter
    # +-inf or NaN on every CPU, so the run diverges at step 20 exactly
    assert main(["train", "--steps", "50", "--no-batchnorm", "--lr-schedule", "0:0.1,20:1e39",
                 "--data", str(words_file(tmp_path)), "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert re.fullmatch(r"fastbn train: error: training diverged at step 20 \(lr 1e\+39\): "
                        r"weight of layer 0 is not finite; [^\n]*no checkpoint was written"
                        r"[^\n]*\n", err), err
    assert not (out / "model.npz").exists()
    token = tmp_path / "dots.txt"
    token.write_text("a.b\n")
    assert main(["train", "--data", str(token), "--quiet"]) == 1
    assert "reserved as the start/end token" in capsys.readouterr().err


@pytest.mark.parametrize("argv, match", [
    (["train", "--steps", "-5"], "--steps: must be > 0"),
    (["train", "--steps", "0"], "--steps: must be > 0"),
    (["train", "--steps", "1.5"], "--steps: invalid int"),
    (["train", "--batch-size", "0"], "--batch-size: must be > 0"),
    (["train", "--batch-size", "1"], "--batch-size 1 cannot train with batch normalization"),
    (["train", "--lr-schedule", "0"], "--lr-schedule: learning rates must be finite and > 0"),
    (["train", "--lr-schedule", "0:-0.1"], "> 0"),
    (["train", "--lr-schedule", "0:0.1,5:0"], "> 0"),
    (["train", "--lr-schedule", "fast"], "cannot read"),
    (["train", "--lr-schedule", "10:0.1"], "start at step 0"),
    (["train", "--dtype", "float16"], "invalid choice: 'float16'"),
    (["train", "--bn-momentum", "1.5"], r"must be in \[0, 1\]"),
    (["train", "--bn-variance", "bessel"], r"--bn-variance: invalid choice: 'bessel' \(choose "
                                           r"from '?biased'?, '?unbiased'?\)"),
    (["train", "--bn-variance"], "--bn-variance: expected one argument"),
    (["train", "--n-hidden", "0"], "--n-hidden: must be > 0"),
    (["train", "--block-size", "-1"], "--block-size: must be > 0"),
    (["train", "--data", "/nonexistent/names.txt"], "no such file"),
    (["train", "--seed", "-1"], "--seed: must be >= 0"),
    (["train", "--seed", "1.5"], "--seed: invalid int"),
    (["sample", "--checkpoint", "x", "--seed", "-3"], "--seed: must be >= 0"),
    (["lab", "--seed", "-1"], "--seed: must be >= 0"),
    (["lab", "ladder", "--seed", "-1"], "--seed: must be >= 0"),
    (["gradcheck", "--seed", "-1"], "--seed: must be >= 0"),
    (["gradcheck", "--eps", "0"], "--eps: must be > 0"),
    (["gradcheck", "--eps", "inf"], "--eps: must be a finite number > 0"),
    (["gradcheck", "--atol", "-1"], "--atol: must be a finite number >= 0"),
    (["gradcheck", "--rtol", "nan"], "--rtol: must be a finite number >= 0"),
    *[(["train", "--resume", "m.npz", *flag], "--resume continues a run with the settings "
       f"stored in its checkpoint; {flag[0]} cannot change them")
      for flag in (["--steps", "5"], ["--batch-size", "8"], ["--lr-schedule", "0.1"],
                   ["--n-hidden", "8"], ["--n-embd", "4"], ["--block-size", "2"],
                   ["--n-layers", "2"], ["--no-batchnorm"], ["--bn-momentum", "0.1"],
                   ["--bn-variance", "unbiased"], ["--bn-variance", "biased"],
                   ["--dtype", "float64"], ["--seed", "0"], ["--calibrate"])],
    (["train", "--resume", "m.npz", "--seed", "1", "--steps", "9"], "--steps, --seed cannot"),
    (["eval", "--checkpoint", "/nonexistent/m.npz"], "no such file"),
    (["sample", "--checkpoint", "/nonexistent/m.npz"], "no such file"),
    (["sample", "--checkpoint", "x", "-n", "0"], "-n: must be > 0"),
    (["frobnicate"], "invalid choice"),
    ([], "required"),
])
def test_usage_errors_exit_2(argv, match, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and re.search(match, err) and "Traceback" not in err


def test_help_shows_the_real_defaults(capsys):
    """The run-defining flags default to None (so --resume can see them given); --help still
    shows the values a new run takes."""
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("SGD steps (default 200000)", "examples per step (default 32)",
                  "0.1, then 0.01 from half the steps on: the lecture's "
                  "0:0.1,100000:0.01 for its 200,000 steps", "hidden width (default 200)",
                  "embedding size (default 10)", "characters of context (default 3)",
                  "blocks (default 1)", "(default 0.001)", "(default float32)",
                  "(default 2147483647)", "{biased,unbiased}", "(default biased)"):
        assert shown in text


def test_out_that_is_not_a_folder_is_refused_before_training(tmp_path, capsys):
    """`--out FILE` used to train the whole run, then die at the first save (FileExistsError)."""
    words = words_file(tmp_path)
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    for out in (taken, taken / "sub"):
        with pytest.raises(SystemExit) as e:
            main(["train", "--data", str(words), "--steps", "30", "--no-plot",
                  "--out", str(out), "--quiet"])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert f"--out {out}: {taken} exists and is not a folder" in err
        assert "Traceback" not in err
    assert taken.read_text() == "not a folder"


def test_a_save_or_plot_that_fails_exits_1_with_a_message(tmp_path, capsys, monkeypatch):
    words = words_file(tmp_path)
    args = ["train", "--data", str(words), "--steps", "30", "--no-batchnorm", "--n-hidden", "8",
            "--quiet"]
    real_save = fastbn.checkpoint.save

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(fastbn.checkpoint, "save", disk_full)
    assert main([*args, "--checkpoint-every", "10", "--out", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err
    assert re.search(r"fastbn train: error: cannot save the checkpoint .*model.npz at step 10: "
                     r".*No space left on device", err)

    monkeypatch.setattr(fastbn.checkpoint, "save", real_save)
    # fastbn.train is also the name of the function: reach the module through importlib
    monkeypatch.setattr(importlib.import_module("fastbn.training"), "plot_history", disk_full)
    assert main([*args, "--out", str(tmp_path / "b")]) == 1
    assert re.search(r"fastbn train: error: cannot write the loss plot .*loss.png: .*No space "
                     r"left on device \(the checkpoint is saved\)", capsys.readouterr().err)
    assert fastbn.load(tmp_path / "b" / "model.npz").meta["complete"]


@pytest.mark.parametrize("flags", [["--steps", str(10**15)], ["--n-hidden", str(10**12)]])
def test_a_run_too_big_for_memory_exits_1_with_a_message(tmp_path, capsys, flags):
    words = words_file(tmp_path)
    assert main(["train", "--data", str(words), *flags, "--no-plot", "--quiet",
                 "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "fastbn train: error: not enough memory for what was asked (Unable to allocate" in err


def test_sample_refuses_a_checkpoint_whose_config_asks_for_terabytes(tmp_path, capsys):
    """A 5 KB file with n_hidden = 10**9 made `fastbn sample` die with 'Unable to allocate'."""
    import json
    m = fastbn.CharMLP(".abc", n_embd=4, n_hidden=8, seed=0)
    path = fastbn.save(m, tmp_path / "m.npz")
    d = dict(np.load(path))
    d["config"] = np.array(json.dumps({**m.config, "n_hidden": 10**9}))
    np.savez(path, **d)
    assert main(["sample", "--checkpoint", str(path)]) == 1
    err = capsys.readouterr().err
    assert "not a valid fastbn checkpoint: param/1.weight has shape (12, 8), but the config " \
           "needs (12, 1000000000)" in err


def test_gradcheck_subcommand_still_works(capsys):
    assert main(["gradcheck"]) == 0
    assert "all pass" in capsys.readouterr().out


def test_python_dash_m_fastbn(names_path, tmp_path):
    """The real entry point in a subprocess: train, then sample from the checkpoint.

    It runs outside the source tree, importing the same fastbn as this process (installed, or
    built in place: its folder goes on PYTHONPATH)."""
    root = str(Path(fastbn.__file__).resolve().parent.parent)
    env = dict(os.environ, FASTBN_DATA=names_path,
               PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-m", "fastbn", "train", "--steps", "100",
                          "--no-plot", "--out", str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path,
                         check=False)
    assert run.returncode == 0, run.stderr
    assert set(losses_in(run.stdout)) == {"train", "val", "test"}
    # stderr is not a terminal here: lecture-style log lines, no progress bar
    assert "\r" not in run.stderr and "/    100: loss" in run.stderr
    run = subprocess.run([sys.executable, "-m", "fastbn", "sample", "--checkpoint",
                          str(tmp_path / "model.npz"), "-n", "3", "--seed", "0"],
                         capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path,
                         check=False)
    assert run.returncode == 0 and len(run.stdout.splitlines()) == 3
    bad = subprocess.run([sys.executable, "-m", "fastbn", "train", "--batch-size", "0"],
                         capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path,
                         check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


# ----------------------------------------------------------------------------------------------
# no command destroys work; options as people type them

def _small_run(tmp_path, out, *extra):
    return ["train", "--data", str(words_file(tmp_path)), "--steps", "20", "--batch-size", "8",
            "--n-hidden", "8", "--no-plot", "--quiet", "--out", str(out), *extra]


def test_train_refuses_an_out_that_holds_a_run_before_training(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert main(_small_run(tmp_path, out)) == 0
    before = (out / "model.npz").read_bytes()
    capsys.readouterr()
    # refused in the checks, before the data is read or anything trains
    monkeypatch.setattr(importlib.import_module("fastbn.training"), "train",
                        lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(SystemExit) as e:
        main(_small_run(tmp_path, out, "--seed", "5"))
    assert e.value.code == 2
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]
    assert line == (f"fastbn train: error: --out {out} already holds a run (model.npz): continue "
                    f"it with --resume {out / 'model.npz'} if it stopped early, replace it with "
                    "--force, or choose another folder with --out")
    assert (out / "model.npz").read_bytes() == before
    # a folder with only a run's loss plot holds a run too
    other = tmp_path / "plot-only"
    other.mkdir()
    (other / "loss.png").write_bytes(b"png")
    with pytest.raises(SystemExit):
        main(_small_run(tmp_path, other))
    assert "already holds a run (loss.png)" in capsys.readouterr().err
    # resuming another run into this folder would overwrite it as well
    with pytest.raises(SystemExit):
        main(["train", "--resume", str(out / "model.npz"), "--out", str(other), "--quiet"])
    assert "already holds a run" in capsys.readouterr().err


def test_train_force_replaces_the_run(tmp_path):
    out = tmp_path / "run"
    assert main([*_small_run(tmp_path, out)[:-4], "--quiet", "--out", str(out)]) == 0
    assert (out / "loss.png").exists()          # the first run plots
    assert main(_small_run(tmp_path, out, "--seed", "5", "--force")) == 0
    assert fastbn.load(out / "model.npz").meta["run"]["seed"] == 5
    # --no-plot: the replaced run's plot does not stay beside the new checkpoint
    assert not (out / "loss.png").exists()


def _parsers(parser):
    """The parser and every subparser under it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_no_parser_takes_abbreviated_options():
    parsers = list(_parsers(build_parser()))
    assert len(parsers) >= 10 and all(not p.allow_abbrev for p in parsers)


@pytest.mark.parametrize("argv, option", [
    (["train", "--step", "100"], "--step"),
    (["train", "--lr", "0.1"], "--lr"),
    (["lab", "--step=5"], "--step=5"),
    (["lab", "ladder", "--deep-step", "5"], "--deep-step"),
    (["sample", "--check", "m.npz"], "--check"),
    (["bench", "--quic"], "--quic"),
    (["sweep", "--dry"], "--dry"),
    (["gradcheck", "--ep", "1e-6"], "--ep"),
])
def test_abbreviated_options_are_errors_with_the_subcommands_usage(argv, option, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    prog = "fastbn " + " ".join(a for a in argv[:2] if not a.startswith("-"))
    assert err.startswith(f"usage: {prog} ")
    assert err.strip().splitlines()[-1].startswith(f"{prog}: error: unrecognized arguments: "
                                                   f"{option}")


def test_an_unknown_option_shows_the_subcommands_usage(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--setps", "100"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: fastbn train [-h] [--data PATH] [--steps N]")
    assert err.strip().splitlines()[-1] == \
        "fastbn train: error: unrecognized arguments: --setps 100"


@pytest.mark.parametrize("argv, hint", [
    (["--quiet", "train", "--steps", "5"], "--quiet before 'train'"),
    (["--no-plot", "--quiet", "train"], "--no-plot --quiet before 'train'"),
    (["-n=3", "sample"], "-n=3 before 'sample'"),
])
def test_a_commands_option_before_its_name_says_where_it_goes(argv, hint, capsys):
    """Not "fastbn train: error: unrecognized arguments: --quiet" (train knows --quiet)."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"fastbn: error: {hint}: the command's options go after its name")


def test_an_unknown_option_before_the_command_is_unrecognized(capsys):
    with pytest.raises(SystemExit):
        main(["--bogus", "train"])
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "fastbn train: error: unrecognized arguments: --bogus"


def test_a_closed_pipe_ends_sample_quietly(tmp_path, monkeypatch, capsys):
    """`fastbn sample | head -2`: the reader leaves; 141 (128 + SIGPIPE), no traceback."""
    import signal

    assert main(["train", "--data", str(words_file(tmp_path)), "--steps", "10", "--batch-size",
                 "4", "--n-hidden", "8", "--quiet", "--no-plot", "--out", str(tmp_path)]) == 0

    def closed(*a, **k):
        raise BrokenPipeError(32, "Broken pipe")
    monkeypatch.setattr("builtins.print", closed)
    monkeypatch.setattr(os, "dup2", lambda *a: None)    # keep the test's own stdout
    assert main(["sample", str(tmp_path / "model.npz")]) == 128 + signal.SIGPIPE


def test_resuming_a_complete_run_is_refused_and_leaves_it(tmp_path, capsys):
    """It went through a 0-step "run": "wall time 0.0 s (nan us/step)", and the checkpoint
    rewritten with that wall time."""
    out = tmp_path / "r"
    assert main(["train", "--data", str(words_file(tmp_path)), "--steps", "10", "--batch-size",
                 "4", "--n-hidden", "8", "--quiet", "--no-plot", "--out", str(out)]) == 0
    ckpt = out / "model.npz"
    before = ckpt.read_bytes()
    capsys.readouterr()
    assert main(["train", "--resume", str(ckpt), "--quiet", "--no-plot"]) == 1
    out_, err = capsys.readouterr()
    assert out_ == "" and err == (f"fastbn train: error: {ckpt} holds a complete run (10 steps): "
                                  f"nothing to resume (its losses: fastbn eval {ckpt}; to train "
                                  "longer, start a new run with more --steps)\n")
    assert ckpt.read_bytes() == before


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out == f"fastbn {fastbn.__version__}\n"


def test_sample_and_eval_take_the_checkpoint_positionally_or_from_the_default_folder(
        tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:                   # nothing trained here yet
        main(["sample"])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "fastbn sample: error: no checkpoint given and none at fastbn-run/model.npz (where "
        "fastbn train saves): train one with fastbn train, or name one: fastbn sample PATH")
    with pytest.raises(SystemExit):
        main(["eval"])
    assert "train one with fastbn train" in capsys.readouterr().err
    words = str(words_file(tmp_path))
    assert main(["train", "--data", words, "--steps", "20", "--batch-size", "8", "--n-hidden",
                 "8", "--no-plot", "--quiet"]) == 0             # into fastbn-run/, the default
    capsys.readouterr()
    outs = []
    for where in ([], ["fastbn-run/model.npz"], ["--checkpoint", "fastbn-run/model.npz"]):
        assert main(["sample", *where, "-n", "4", "--seed", "1"]) == 0
        assert main(["eval", *where, "--data", words]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] == outs[2] and len(outs[0].splitlines()) == 5
    with pytest.raises(SystemExit):
        main(["sample", "fastbn-run/model.npz", "--checkpoint", "fastbn-run/model.npz"])
    assert "give the checkpoint once" in capsys.readouterr().err


def test_eval_reads_the_data_its_run_trained_on(tmp_path, capsys, monkeypatch):
    """Without --data, `fastbn eval` uses the file the checkpoint's run trained on (not the
    default names.txt, which may be other data or not there); once that file has changed, the
    default lookup again (here: FASTBN_DATA pointing at a missing file, a one-line error)."""
    words = words_file(tmp_path)
    out = tmp_path / "r"
    assert main(_small_run(tmp_path, out)) == 0
    capsys.readouterr()
    monkeypatch.setenv("FASTBN_DATA", str(tmp_path / "not-there.txt"))
    assert main(["eval", str(out / "model.npz")]) == 0
    assert main(["eval", str(out / "model.npz"), "--data", str(words)]) == 0
    got, given = capsys.readouterr().out.splitlines()
    assert got == given and got.startswith("loss: train ")
    words.write_text(words.read_text() + "anna\n")         # no longer the run's data
    assert main(["eval", str(out / "model.npz")]) == 1
    assert "not-there.txt" in capsys.readouterr().err


def test_lab_options_before_the_subcommand_are_refused(capsys):
    """`fastbn lab --steps 2000 ladder` trained 200,000 steps per row: the ladder's own default
    replaced the lab's option. Options go after the word; before it they are refused."""
    for argv, given in ((["lab", "--steps", "2000", "ladder"], "--steps"),
                        (["lab", "--quiet", "--seed", "3", "robustness"], "--quiet, --seed")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert line.startswith(f"fastbn lab {argv[-1]}: error: {given} before '{argv[-1]}' "
                               "would not apply to it: put the options after the word")
    args = build_parser().parse_args(["lab", "ladder", "--steps", "2000"])
    assert args.steps == 2000 and args.lab_command == "ladder"
    args = build_parser().parse_args(["lab", "--steps", "20"])
    assert args.steps == 20 and args.lab_command is None


def test_the_default_schedule_scales_with_the_run(tmp_path, capsys):
    """A run shorter than 100,000 steps never decayed; the default now decays at half of the
    run's steps, which for the lecture's 200,000 is its schedule exactly."""
    from fastbn.sweep.space import resolve
    from fastbn.training import DEFAULT_LR_SCHEDULE, default_lr_schedule
    assert default_lr_schedule(200_000) == DEFAULT_LR_SCHEDULE == ((0, 0.1), (100_000, 0.01))
    assert default_lr_schedule(30_000) == ((0, 0.1), (15_000, 0.01))
    assert default_lr_schedule(1) == ((0, 0.1),)
    # the library, the command line and a sweep's trial: the same rule
    m = fastbn.CharMLP(".abdnot", n_embd=4, n_hidden=8, seed=0)
    ds = fastbn.data.load_dataset(words_file(tmp_path))
    res = fastbn.train(m, ds, steps=30, batch_size=8, quiet=True)
    assert res.lr_schedule == ((0, 0.1), (15, 0.01))
    assert resolve({"steps": 30})[1]["lr_schedule"] == ((0, 0.1), (15, 0.01))
    assert resolve({})[1]["lr_schedule"] == DEFAULT_LR_SCHEDULE
    out = tmp_path / "run"
    assert main(["train", "--data", str(words_file(tmp_path)), "--steps", "30", "--n-hidden",
                 "8", "--no-plot", "--out", str(out)]) == 0
    assert "30 steps of batch 32, lr 0:0.1,15:0.01, seed" in capsys.readouterr().out
    assert fastbn.load(out / "model.npz").meta["run"]["lr_schedule"] == "0:0.1,15:0.01"


# ----------------------------------------------------------------------------------------------
# every user mistake is one line, never a traceback

def _overflowing_checkpoint(folder):
    """A loadable checkpoint whose batch norm overflows float32 when folded (gamma 3e38 over
    sqrt(running_var + eps) ~ 3e-3)."""
    m = fastbn.CharMLP(".abdnot", n_embd=4, n_hidden=8, seed=0)
    bn = m.batchnorms()[0]
    bn.gamma[...] = 3e38
    bn.running_var[...] = 0.0
    return fastbn.save(m, folder / "overflow.npz")


def _inputs(tmp_path):
    """The files the bad-input cases point at, by name."""
    words = words_file(tmp_path)
    one = tmp_path / "one-word.txt"
    one.write_text("anna\n")
    five = tmp_path / "five-words.txt"          # 4 / 0 / 1 words: no validation split
    five.write_text("anna\nbob\notto\nada\nabba\n")
    garbage = tmp_path / "garbage.npz"
    garbage.write_text("not a checkpoint")
    good = fastbn.save(fastbn.CharMLP(".abdnot", n_embd=4, n_hidden=8, seed=0),
                       tmp_path / "good.npz")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:200])
    afile = tmp_path / "a-file"
    afile.write_text("x")
    run = tmp_path / "a-run"
    run.mkdir()
    (run / "model.npz").write_bytes(good.read_bytes())
    lab_out = tmp_path / "a-lab"
    lab_out.mkdir()
    (lab_out / "report.md").write_text("# a report\n")
    bench = tmp_path / "a-bench"
    bench.mkdir()
    (bench / "results.json").write_text("{}")
    return {"BENCH": bench, "WORDS": words, "ONE": one, "FIVE": five, "GARBAGE": garbage,
            "TRUNCATED": truncated,
            "OVERFLOW": _overflowing_checkpoint(tmp_path), "GOOD": good, "DIR": tmp_path,
            "FILE": afile, "RUN": run, "LAB": lab_out, "MISSING": tmp_path / "missing.txt",
            "OUT": tmp_path / "out"}


BAD_INPUTS = [
    # (argv with placeholders, exit status, a part of the error line)
    (["train", "--data", "MISSING", "--out", "OUT"], 2, "--data MISSING: no such file"),
    (["train", "--data", "DIR", "--out", "OUT"], 2, "--data DIR: is a directory, not a file"),
    (["train", "--data", "ONE", "--out", "OUT"], 1, "its train and val splits are empty"),
    (["train", "--data", "FIVE", "--out", "OUT"], 1, "its val split is empty"),
    (["train", "--data", "WORDS", "--block-size", "1000000000", "--out", "OUT"], 1,
     "more than this machine's"),
    (["train", "--data", "WORDS", "--out", "FILE"], 2, "exists and is not a folder"),
    (["train", "--data", "WORDS", "--out", "RUN"], 2, "already holds a run"),
    (["train", "--resume", "MISSING"], 2, "--resume MISSING: no such file"),
    (["train", "--resume", "DIR"], 2, "is a directory"),
    (["train", "--resume", "GARBAGE", "--out", "OUT"], 1, "not a valid fastbn checkpoint"),
    (["train", "--resume", "GOOD", "--out", "OUT"], 1, "holds no training state to resume"),
    (["train", "--steps", "many"], 2, "--steps: invalid int value: 'many'"),
    (["train", "--lr-schedule", "0:x"], 2, "cannot read"),
    (["eval", "MISSING"], 2, "checkpoint MISSING: no such file"),
    (["eval", "DIR"], 2, "checkpoint DIR: is a directory"),
    (["eval", "--checkpoint", "DIR"], 2, "--checkpoint DIR: is a directory"),
    (["eval", "GARBAGE", "--data", "WORDS"], 1, "not a valid fastbn checkpoint"),
    (["eval", "TRUNCATED", "--data", "WORDS"], 1, "not a valid fastbn checkpoint"),
    (["eval", "GOOD", "--data", "DIR"], 2, "--data DIR: is a directory"),
    (["eval", "OVERFLOW", "--data", "WORDS"], 1, "cannot fold this BatchNorm1d"),
    (["sample", "OVERFLOW"], 1, "cannot fold this BatchNorm1d"),
    (["sample", "GARBAGE"], 1, "not a valid fastbn checkpoint"),
    (["sample", "TRUNCATED"], 1, "not a valid fastbn checkpoint"),
    (["sample", "GOOD", "-n", "lots"], 2, "-n: invalid int value"),
    (["sample", "GOOD", "--max-len", "0"], 2, "--max-len: must be > 0"),
    (["sample", "GOOD", "--max-len", str(10**24)], 1, "cannot sample 20 names of up to"),
    (["lab", "--data", "WORDS", "--out", "FILE"], 2, "--out FILE: FILE exists and is not a "
                                                     "folder"),
    (["lab", "--data", "WORDS", "--out", "LAB"], 2, "already holds a report (report.md)"),
    (["lab", "--data", "DIR"], 2, "--data DIR: is a directory"),
    (["lab", "--data", "ONE", "--out", "OUT"], 1, "its train and val splits are empty"),
    (["lab", "--every", "0"], 2, "--every: must be > 0"),
    (["lab", "ladder", "--data", "WORDS", "--out", "FILE"], 2, "exists and is not a folder"),
    (["lab", "ladder", "--data", "MISSING"], 2, "no such file"),
    (["lab", "robustness", "--data", "WORDS", "--out", "FILE"], 2, "exists and is not a folder"),
    (["lab", "robustness", "--gains", "1,x"], 2, "invalid number"),
    (["bench", "--data", "DIR"], 2, "--data DIR: is a directory"),
    (["bench", "--out", "FILE"], 2, "exists and is not a folder"),
    (["bench", "--batch-sizes", "1"], 2, "batch sizes must be >= 2"),
    (["bench", "--out", "BENCH"], 2, "--out BENCH already holds results (results.json): "
                                     "replace them with --force"),
    (["sweep", "--data", "DIR", "--dry-run"], 2, "--data DIR: is a directory"),
    (["sweep", "--param", "steps=x", "--dry-run"], 2, "--param"),
    (["gradcheck", "--eps", "-1"], 2, "--eps: must be > 0"),
]


@pytest.mark.parametrize("argv, code, match", BAD_INPUTS,
                         ids=[" ".join(a) for a, _, _ in BAD_INPUTS])
def test_every_bad_input_is_one_line_never_a_traceback(argv, code, match, tmp_path, capsys,
                                                       monkeypatch):
    """A usage error (exit 2) prints the subcommand's usage and one error line; a failure at run
    time (exit 1) prints the one line alone. Nothing trains, nothing is written."""
    monkeypatch.chdir(tmp_path)
    files = _inputs(tmp_path)
    argv = [str(files.get(a, a)) for a in argv]
    match = re.sub(r"\b[A-Z]+\b", lambda m: str(files.get(m[0], m[0])), match)
    importlib.import_module("fastbn.lab")        # (which reads train's signature on import)
    for name in ("fastbn.training", "fastbn.lab.experiments"):   # nothing may train
        monkeypatch.setattr(importlib.import_module(name), "train",
                            lambda *a, **k: pytest.fail("trained"))
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    captured = capsys.readouterr()
    err = captured.err
    assert rc == code, err
    assert "Traceback" not in err and "Traceback" not in captured.out
    lines = err.strip().splitlines()
    prog = "fastbn " + " ".join(a for a in argv[:2] if not a.startswith("-") and
                                a in ("train", "eval", "sample", "lab", "ladder", "robustness",
                                      "bench", "sweep", "gradcheck"))
    assert lines[-1].startswith(f"{prog}: error: ") and match in lines[-1]
    if code == 1:
        assert len(lines) == 1
    else:
        assert lines[0].startswith(f"usage: {prog} ")
        assert not any(": error: " in line for line in lines[:-1])
    assert not (tmp_path / "out").exists() and not (tmp_path / "fastbn-run").exists()


def test_no_names_file_and_no_network_is_one_line(tmp_path, capsys, monkeypatch):
    """The library's message lists the ways to provide names.txt on several lines; the command
    prints it as one."""
    import urllib.error
    import urllib.request

    def offline(*a, **k):
        raise urllib.error.URLError("offline")
    monkeypatch.delenv("FASTBN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    for argv in (["train", "--out", str(tmp_path / "run")], ["lab", "--out", str(tmp_path / "l")]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"fastbn {argv[0]}: error: names.txt is "
                                                       "not cached and the download failed")
        assert ("Provide names.txt in one of these ways: pass its path: --data PATH (or "
                "path=... in Python); set the environment variable FASTBN_DATA=") in err
        assert f"place it at {tmp_path / 'cache' / 'fastbn' / 'names.txt'}. It can be " in err
    assert not (tmp_path / "run").exists()


def test_an_unreadable_input_is_a_usage_error(tmp_path, capsys, monkeypatch):
    """(Simulated: permissions do not stop root, who runs some CI.)"""
    import fastbn._argtypes as argtypes
    good = fastbn.save(fastbn.CharMLP(".abdnot", n_embd=4, n_hidden=8, seed=0), tmp_path / "m.npz")
    monkeypatch.setattr(argtypes.os, "access", lambda path, mode: False)
    for argv in (["sample", str(good)], ["train", "--data", str(good)]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
            f"{good}: cannot be read (permission denied)")
