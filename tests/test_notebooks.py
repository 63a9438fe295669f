"""Notebooks run top to bottom on CPU (small settings via environment variables)."""

import os
import pathlib

import nbformat
from nbclient import NotebookClient

REPO = pathlib.Path(__file__).resolve().parent.parent


def test_quickstart_notebook_executes():
  nb = nbformat.read(REPO / "notebooks" / "quickstart.ipynb", as_version=4)
  os.environ["MIXJAX_NOTEBOOK_STEPS"] = "4"
  NotebookClient(nb, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": str(REPO)}}).execute()
  outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                    for o in c.get("outputs", []))
  assert "4 {'bios':" in outputs
