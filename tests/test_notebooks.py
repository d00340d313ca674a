"""The teaching notebooks in docs/notebooks run top to bottom in a real Jupyter kernel.

Each is executed with nbclient (a fresh ipykernel, as a notebook server starts it), with the
fastbn under test on the kernel's path; any error in any cell fails the test. The notebooks are
stored without outputs: this test is what regenerates them.
"""
import os
from pathlib import Path

import pytest

import fastbn

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "docs" / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 600    # a hang guard only: how long a notebook takes is measured, not tested


def test_the_notebooks_are_there():
    names = {p.name for p in NOTEBOOKS}
    assert {"makemore_part3_batchnorm.ipynb", "backprop_by_hand.ipynb"} <= names, names


def _outputs(nb):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, names_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(path, as_version=4)
    assert not _outputs(nb), f"{path.name} is stored with outputs; clear them before committing"
    # the kernel imports the fastbn these tests import, and reads the names file from FASTBN_DATA
    root = str(Path(fastbn.__file__).resolve().parent.parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [root, *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.setenv("FASTBN_DATA", names_path)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()                      # raises CellExecutionError on the first failing cell
    outputs = _outputs(nb)
    assert not [o for o in outputs if o.output_type == "error"]
    if path.stem == "makemore_part3_batchnorm":
        # the figures and the lab's report show inline, as images and HTML
        pngs = [o for o in outputs if "image/png" in o.get("data", {})]
        htmls = [o for o in outputs if "text/html" in o.get("data", {})]
        assert len(pngs) >= 4 and any("data:image/png;base64," in o["data"]["text/html"]
                                      for o in htmls)
