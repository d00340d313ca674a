"""Build the Cython kernels in csrc/ into fastbn._kernels.

Environment switches (all off by default):
  FASTBN_NATIVE=1    compile with -march=native (faster, not portable to other CPUs)
  FASTBN_DEBUG=1     turn Cython bounds/wraparound checks back on and build with -O0 -g
  FASTBN_SANITIZE=1  build with AddressSanitizer and UndefinedBehaviorSanitizer (any report is
                     fatal); run it as .ci/sanitize does: LD_PRELOAD=libasan, detect_leaks=0
"""
import os
from pathlib import Path

import numpy as np
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def flag(name):
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


debug = flag("FASTBN_DEBUG")
# -fno-math-errno and -fno-trapping-math let gcc vectorize the elementwise loops (tanh, exp,
# clamps); unlike -ffast-math they change no result: NaN, Inf and rounding stay IEEE.
compile_args = ["-O0", "-g"] if debug else ["-O3", "-fno-math-errno", "-fno-trapping-math"]
link_args = []
if flag("FASTBN_SANITIZE"):
    sanitize = ["-fsanitize=address,undefined,float-cast-overflow", "-fno-sanitize-recover=all",
                "-fno-omit-frame-pointer", "-g"]
    compile_args = ["-O1", "-fno-math-errno", "-fno-trapping-math"] + sanitize
    link_args = sanitize
macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
if flag("FASTBN_SANITIZE"):
    macros.append(("FB_SANITIZE", "1"))     # fastbn._kernels.SANITIZED
if flag("FASTBN_NATIVE"):
    compile_args.append("-march=native")
    macros.append(("FB_NO_CLONES", "1"))   # csrc/fused.c: no per-CPU clones needed

directives = {
    "language_level": 3,
    "boundscheck": debug,
    "wraparound": debug,
    "initializedcheck": debug,
    "cdivision": True,
}

extensions = [
    Extension(
        "fastbn._kernels",
        ["csrc/_kernels.pyx", "csrc/fused.c", "csrc/layers.c"],
        # the headers the C files include and the op calls _kernels.pyx includes: an edit to
        # one rebuilds the extension
        depends=["csrc/clones.h", "csrc/fused.h", "csrc/fused_impl.h", "csrc/layers.h",
                 "csrc/layers_impl.h", "csrc/_opcalls.pxi", "csrc/_elementwise.pxi.tp"],
        include_dirs=[np.get_include(), "csrc"],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
        define_macros=macros,
    ),
]



def expand_templates():
    """csrc/<name>.tp -> csrc/<name> (Cython.Tempita, as scikit-learn builds its .pyx.tp): the
    per-dtype code is generated, not written twice. A file is rewritten only when its text
    changes, so an unchanged template does not rebuild the extension."""
    from Cython import Tempita
    for template in sorted(Path(__file__).parent.glob("csrc/*.tp")):
        text = Tempita.sub(template.read_text(encoding="utf-8"))
        target = template.with_suffix("")
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")


class cython_build_ext(build_ext):
    """Cython runs here, when the extension is built: once per build. (Called at the top of
    setup.py, it ran every time setup.py was loaded: for the sdist, the wheel's requirements
    and the wheel, each a separate step of ``python -m build`` or ``pip install``.)"""

    def run(self):
        from Cython.Build import cythonize
        expand_templates()
        # the same Extension objects (setuptools has prepared them), with Cython's C in place
        # of the .pyx
        for ext, cythonized in zip(self.extensions, cythonize(
                self.extensions, compiler_directives=directives)):
            ext.sources = cythonized.sources
        super().run()


setup(ext_modules=extensions, cmdclass={"build_ext": cython_build_ext})
