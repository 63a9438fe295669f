"""Every notebook runs top to bottom in its fast mode (`MIXJAX_FAST=1`), from a directory outside the
checkout, and every plotting cell (tagged `plot`) draws its picture."""

import ast
import importlib.util
import pathlib
import re
import resource
import time

import nbformat
from nbclient import NotebookClient
import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
# The install cell's lines that may differ between notebooks (what each one needs).
_PER_NOTEBOOK = re.compile(r"^(EXTRAS|REQUIRES) = .*$", re.M)


def _children_cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def _code_cells(nb):
  return [c for c in nb.cells if c.cell_type == "code"]


def test_every_capability_has_a_notebook():
  names = {p.stem for p in NOTEBOOKS}
  assert {"quickstart", "scheduled_mixtures", "ul2", "iclm", "mixture_optimisation",
          "pod_planning", "kernels", "continued_pretraining"} <= names


def test_notebooks_share_one_install_cell_and_name_no_machine_path():
  first_cells = set()
  for path in NOTEBOOKS:
    nb = nbformat.read(path, as_version=4)
    first_cells.add(_PER_NOTEBOOK.sub("", _code_cells(nb)[0].source))
    text = "\n".join(c.source for c in nb.cells)
    assert not re.search(r"/work/|/home/|/tmp/|<this repo>|git\+<", text), path.name
    code = "\n".join(c.source for c in _code_cells(nb))
    assert not re.search(r"--gin_file=['\"]?gin/", code), f"{path.name}: use gin_utils.gin_path"
    assert all(not c.get("outputs") for c in _code_cells(nb)), f"{path.name}: clear its outputs"
  assert len(first_cells) == 1, "the notebooks' install cells have drifted apart"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_fast_mode_and_draws_its_plots(path, tmp_path, monkeypatch):
  monkeypatch.setenv("MIXJAX_FAST", "1")
  nb = nbformat.read(path, as_version=4)
  # Run here, never pip-install: a module its install cell needs (pod planning: libtpu, the [tpu]
  # extra CI installs) missing from this environment skips it, as the other dry-run tests skip.
  requires = ast.literal_eval(re.search(r"^REQUIRES = (.*?)  #", _code_cells(nb)[0].source, re.M)[1])
  missing = [m for m in requires if importlib.util.find_spec(m) is None]
  if missing:
    pytest.skip(f"{path.name} needs {missing}: pip install -e '.[dev,tpu]'")
  start, cpu = time.perf_counter(), _children_cpu_seconds()
  NotebookClient(nb, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": str(tmp_path)}}).execute()
  # CPU seconds of the kernel and what it ran (counted once the kernel has exited): the cost
  # in the suite's budget, which wall time on a shared machine does not show.
  print(f"{path.name}: {time.perf_counter() - start:.1f} s wall, "
        f"{_children_cpu_seconds() - cpu:.1f} s CPU")
  plots = [c for c in _code_cells(nb) if "plot" in c.metadata.get("tags", [])]
  assert plots, f"{path.name} has no cell tagged 'plot'"
  for cell in plots:
    images = [o for o in cell.outputs if "image/png" in o.get("data", {})]
    assert images, f"{path.name}: a plotting cell drew nothing:\n{cell.source[:300]}"
