"""fastbn's public API is typed (PEP 561: fastbn/py.typed, a stub for the compiled module):
mypy --strict on a user script that calls it finds no error, and finds the wrong calls."""
import pathlib
import re
import shutil
import sys
import textwrap

import pytest

import fastbn

mypy_api = pytest.importorskip("mypy.api", reason="mypy is not installed: pip install mypy")

HERE = pathlib.Path(__file__).resolve().parent
SCRIPT = HERE / "typing" / "user_script.py"
PKG = pathlib.Path(fastbn.__file__).resolve().parent


def _mypy(path, tmp_path):
    # only the script's own errors: fastbn's modules are read for their types, not checked
    return mypy_api.run([str(path), "--strict", "--follow-imports=silent",
                         "--cache-dir", str(tmp_path / ".mypy_cache"), "--no-color-output",
                         "--python-executable", sys.executable])


def test_the_package_is_marked_typed():
    assert (PKG / "py.typed").exists()
    assert (PKG / "_kernels.pyi").exists()


def test_a_user_script_type_checks(tmp_path):
    out, err, status = _mypy(SCRIPT, tmp_path)
    assert status == 0, out + err


def test_mypy_sees_the_annotations(tmp_path):
    """The check has teeth: wrong calls of the API are errors, and the return types are the
    documented classes (not Any)."""
    bad = tmp_path / "bad.py"
    bad.write_text(textwrap.dedent("""
        import numpy as np
        from fastbn import gradcheck_all, ops, exercises

        reveal_type(gradcheck_all())
        reveal_type(ops.tanh_forward(np.zeros(3)))
        reveal_type(exercises.problem())
        gradcheck_all(seed="zero")
        ops.leaky_relu_forward(np.zeros(3), negative_slope="steep")
        ops.batchnorm_backward(np.zeros((2, 3)), cache=None)
        import fastbn
        fastbn.gradcheck_al()
    """))
    out, err, status = _mypy(bad, tmp_path)
    assert status == 1, out + err
    assert "GradcheckSuite" in out, out
    assert "tuple[numpy.ndarray" in out and "fastbn._kernels.Cache" in out, out
    assert out.count("error:") == 4, out
    assert 'has no attribute "gradcheck_al"' in out, out


def test_mypy_sees_the_model_and_training_annotations(tmp_path):
    """The model, training, checkpoint and folding API: the documented return types, and the
    wrong calls are errors."""
    bad = tmp_path / "bad_model.py"
    bad.write_text(textwrap.dedent("""
        import fastbn
        from fastbn import CharMLP

        model = CharMLP(".abc")
        reveal_type(model.sample(3))
        reveal_type(fastbn.train(model, ([[0, 0, 0]], [1]), steps=1))
        reveal_type(fastbn.load("m.npz"))
        reveal_type(fastbn.fold_batchnorm(model))
        model.sample(n="three")
        CharMLP(".abc", n_hidden="wide")
        fastbn.train(model, ([[0, 0, 0]], [1]), steps=1, batch_size=2, fused="yes")
        fastbn.save(model, 3)
    """))
    out, err, status = _mypy(bad, tmp_path)
    assert status == 1, out + err
    # (mypy writes builtins.list[builtins.str] or list[str], by version)
    assert re.search(r'Revealed type is "(builtins\.)?list\[(builtins\.)?str\]"', out), out
    assert 'Revealed type is "fastbn.training.TrainResult"' in out, out
    # load: a CharMLP, or the folded model (inference only, not a CharMLP) of a folded checkpoint
    assert re.search(r'Revealed type is "(Union\[fastbn\.model\.CharMLP, '
                     r'fastbn\.folding\.FoldedCharMLP\]|fastbn\.model\.CharMLP \| '
                     r'fastbn\.folding\.FoldedCharMLP)"', out), out
    assert 'Revealed type is "fastbn.folding.FoldedCharMLP"' in out, out
    assert out.count("error:") == 4, out
    assert '"sample" of "CharMLP" has incompatible type "str"; expected "int"' in out, out


TYPED = ["ops.py", "nn.py", "gradchecks.py", "comparison.py", "exercises.py", "data.py",
         "reference.py", "model.py", "training.py", "checkpoint.py", "folding.py", "fused.py",
         "inference.py", "sweep/space.py", "sweep/trial.py", "sweep/run.py", "sweep/report.py",
         "lab/stats.py", "lab/probe.py", "lab/plots.py", "lab/report.py", "lab/experiments.py",
         "lab/robustness.py", "bench/flops.py", "bench/peers.py", "bench/verify.py",
         "bench/timing.py", "bench/targets.py", "bench/runner.py", "bench/command.py",
         "_schedule.py", "_figures.py", "_names_file.py", "blocks.py",
         "diagnosis.py"]


def test_the_typed_modules_type_check(tmp_path):
    """The annotated modules agree with their own annotations (mypy's default checks). Checked
    in a copy of the package: given files inside site-packages (an installed fastbn), mypy takes
    site-packages for a source folder and stops at the first module there that shadows one of
    its own (typing_extensions). The optional peers (torch, in the benchmark) are Any when they
    are not installed: their absence is no error of fastbn's annotations."""
    copy = tmp_path / "src" / "fastbn"
    shutil.copytree(PKG, copy, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    out, err, status = mypy_api.run([*(str(copy / m) for m in TYPED), "--follow-imports=silent",
                                     "--ignore-missing-imports",
                                     "--cache-dir", str(tmp_path / ".mypy_cache"),
                                     "--no-color-output", "--python-executable",
                                     sys.executable])
    assert status == 0, out + err


def test_the_stub_covers_the_compiled_module():
    """Every name of fastbn._kernels is in its stub, and the stub names nothing it lacks."""
    import ast

    from fastbn import _kernels
    tree = ast.parse((PKG / "_kernels.pyi").read_text())
    stub = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    stub |= {t.id for n in tree.body if isinstance(n, ast.AnnAssign)
             for t in [n.target] if isinstance(t, ast.Name)}
    have = {n for n in vars(_kernels) if not n.startswith("__") and n != "np"}
    assert sorted(have - stub) == [], "names of fastbn._kernels missing from _kernels.pyi"
    assert sorted(stub - have) == [], "names in _kernels.pyi that fastbn._kernels does not have"
    for cls in ("Cache", "FusedNet"):
        node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls)
        methods = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
        public = {n for n in vars(getattr(_kernels, cls)) if not n.startswith("_")}
        attrs = {t.target.id for t in node.body if isinstance(t, ast.AnnAssign)}
        assert public <= methods | attrs, (cls, sorted(public - methods - attrs))
