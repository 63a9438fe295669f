"""The dependency rule of DESIGN.md, checked on the source: imports run one way.

`vocab` <- `data` <- `mixing`/`iclm`/`testbed`; `kernels` <- `models` <- `training`/`eval`/
`inference`; binaries on top, imported by nothing. Every import counts, function-level ones too
(they may not dodge the rule), and modules must not import each other in a cycle.
"""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1] / "mixjax"

# Top-level part of mixjax -> the parts it may import (besides itself).
BASE = {"vocab", "gin_utils"}
ALLOWED = {
    "vocab": set(),
    "gin_utils": set(),
    "user_errors": set(),  # how binaries end on an error; imported by binaries only
    "console": set(),  # a clean console (TensorFlow loaded quietly); imported by binaries only
    "kernels": set(),
    "data": {"vocab"},
    # The iterator side (schedules, allocation, stream, sources) needs only data; the methods
    # (swarm, regmix, doremi, alignment) train proxies, so they use models and training too
    # (training.loop imports only mixing.stream: no module cycle, checked below); DoReMi
    # restores its reference from a run directory (inference.restore); iclm: DSIR's n-grams.
    "mixing": BASE | {"data", "iclm", "models", "kernels", "training", "inference"},
    "testbed": set(),
    "iclm": {"data", "vocab", "testbed"},
    "models": {"kernels"},
    "training": BASE | {"data", "mixing", "models", "kernels", "eval"},
    "eval": BASE | {"data", "iclm", "models", "kernels", "training"},
    "inference": BASE | {"data", "models", "kernels", "training", "eval", "iclm"},
    "launch": BASE | {"data", "mixing", "models", "kernels", "training", "eval", "inference"},
    "compat": BASE | {"data", "models", "kernels", "training", "inference"},
    "experiments": BASE | {"data", "mixing", "iclm", "testbed", "models", "kernels", "training",
                           "eval", "inference", "launch", "compat"},
}
# Binaries: thin entry points on top; they may import anything, nothing may import them.
BINARIES = {"mixjax.train", "mixjax.infer", "mixjax.eval.__main__", "mixjax.convert",
            "mixjax.plots", "mixjax.iclm.cli", "mixjax.iclm.__main__", "mixjax.testbed.__main__",
            "mixjax.data.synthetic", "mixjax.mixing.regmix.__main__",
            "mixjax.mixing.doremi.__main__", "mixjax.mixing.alignment.__main__"}
# The mixture's iterator side must stay free of models and training (the methods may use them).
ITERATOR_SIDE = ("mixjax.mixing.schedules", "mixjax.mixing.allocation", "mixjax.mixing.stream",
                 "mixjax.mixing.sources", "mixjax.mixing.accounting")


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path) -> set[str]:
  """mixjax modules imported anywhere in `path` (`from mixjax.x import y` counts as mixjax.x.y
  when that is a module, else mixjax.x)."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      found |= {a.name for a in node.names if a.name.split(".")[0] in ("mixjax", "mixjax_tasks")}
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      if node.module.split(".")[0] not in ("mixjax", "mixjax_tasks"):
        continue
      for alias in node.names:
        candidate = f"{node.module}.{alias.name}"
        found.add(candidate if candidate in MODULES else node.module)
  return found


MODULES = {_module_name(p): p for p in ROOT.rglob("*.py")}


def _part(module: str) -> str:
  return module.split(".")[1] if module.count(".") else module


def test_every_part_is_known():
  parts = {_part(m) for m in MODULES if m != "mixjax"}
  assert parts - set(ALLOWED) - {_part(b) for b in BINARIES} == set()


def test_imports_run_one_way():
  upward = []
  for module, path in MODULES.items():
    for imported in _imports(path):
      if imported.split(".")[0] == "mixjax_tasks":
        if module not in BINARIES:
          upward.append(f"{module} imports {imported} (task registrations are for binaries)")
        continue
      if module in BINARIES or imported == "mixjax":
        continue
      if imported in BINARIES:
        upward.append(f"{module} imports the binary {imported}")
      elif _part(imported) != _part(module) and _part(imported) not in ALLOWED[_part(module)]:
        upward.append(f"{module} imports {imported}")
  assert not upward, "Imports against DESIGN.md's direction:\n" + "\n".join(sorted(upward))


def test_the_mixture_iterator_side_imports_no_model_or_training():
  for module in ITERATOR_SIDE:
    parts = {_part(i) for i in _imports(MODULES[module])}
    assert not parts & {"models", "training", "kernels", "eval"}, module


def test_modules_import_no_cycle():
  graph = {m: {i for i in _imports(p) if i in MODULES and i != m} for m, p in MODULES.items()}
  state, cycles = {}, []

  def visit(m, stack):
    state[m] = "open"
    for n in sorted(graph[m]):
      if state.get(n) == "open":
        cycles.append(" -> ".join(stack[stack.index(n):] + [n]))
      elif n not in state:
        visit(n, stack + [n])
    state[m] = "done"
  for m in sorted(graph):
    if m not in state:
      visit(m, [m])
  assert not cycles, "Import cycles:\n" + "\n".join(cycles)


def test_the_checker_sees_an_upward_import(tmp_path):
  bad = tmp_path / "bad.py"
  bad.write_text("def f():\n  from mixjax.training import loop\n  from mixjax.models import masks\n")
  assert _imports(bad) == {"mixjax.training.loop", "mixjax.models.masks"}
