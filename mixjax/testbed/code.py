"""code: small Python programs with their printed output; held-out programs as probes.

Each program is self-contained while none of its proper suffixes is (each later line reads a
variable set earlier), so a held-out program cannot appear as the tail of a train one.
"""

from mixjax.testbed import config as config_lib
from mixjax.testbed import draws
from mixjax.testbed import registry
from mixjax.testbed import text

NAME = "code"
# No variable name ends another, so a program line never hides inside a longer one.
_VARS = ("a", "b", "c", "n", "m", "k", "x", "y", "z", "total", "count", "score", "width",
         "height", "speed", "price")
_FUNCS = ("f", "g", "bump", "step", "scale", "shift")
_ARGS = ("x", "n", "v")
_LISTS = ("xs", "nums", "vals", "items")
_REDUCERS = {"sum": sum, "max": max, "min": min, "len": len}
_ARITH = text.ARITH


def _prog_chain(d: draws.Draws) -> tuple[str, int]:
  a, b = d.sample(_VARS, 2)
  x, y, op = d.between(0, 20), d.between(1, 9), d.choice(tuple(_ARITH))
  return f"{a} = {x}\n{b} = {a} {op} {y}\nprint({b})", _ARITH[op](x, y)


def _prog_three(d: draws.Draws) -> tuple[str, int]:
  a, b, c = d.sample(_VARS, 3)
  x, y, z = d.between(0, 12), d.between(0, 12), d.between(1, 9)
  op, op2 = d.choice(tuple(_ARITH)), d.choice(("+", "-"))
  value = _ARITH[op2](_ARITH[op](x, y), z)
  return f"{a} = {x}\n{b} = {y}\n{c} = {a} {op} {b}\nprint({c} {op2} {z})", value


def _prog_loop(d: draws.Draws) -> tuple[str, int]:
  t = d.choice(_VARS)
  start, times, step, op = d.between(0, 10), d.between(2, 5), d.between(1, 5), d.choice(("+", "-"))
  program = f"{t} = {start}\nfor i in range({times}):\n    {t} = {t} {op} {step}\nprint({t})"
  return program, _ARITH[op](start, times * step)


def _prog_branch(d: draws.Draws) -> tuple[str, int]:
  a = d.choice(_VARS)
  x, limit, bonus = d.between(0, 20), d.between(0, 20), d.between(1, 9)
  program = (f"{a} = {x}\nif {a} > {limit}:\n    print({a} - {limit})\n"
             f"else:\n    print({a} + {bonus})")
  return program, x - limit if x > limit else x + bonus


def _prog_function(d: draws.Draws) -> tuple[str, int]:
  f, arg = d.choice(_FUNCS), d.choice(_ARGS)
  k, x, op = d.between(1, 9), d.between(0, 12), d.choice(tuple(_ARITH))
  return f"def {f}({arg}):\n    return {arg} {op} {k}\nprint({f}({x}))", _ARITH[op](x, k)


def _prog_list(d: draws.Draws) -> tuple[str, int]:
  name, reducer = d.choice(_LISTS), d.choice(tuple(_REDUCERS))
  values = [d.between(0, 20) for _ in range(d.between(2, 5))]
  return f"{name} = {values}\nprint({reducer}({name}))", _REDUCERS[reducer](values)


_PROGRAMS = (_prog_chain, _prog_three, _prog_loop, _prog_branch, _prog_function, _prog_list)


def _program(seed: int, split: str, d: draws.Draws) -> tuple[str, int]:
  """Returns (program, printed value) owned by `split` (rejection sampling on its bucket)."""
  while True:
    program, value = d.choice(_PROGRAMS)(d)
    if draws.heldout_split(seed, NAME, program) == split:
      return program, value


def _document(config: config_lib.CorpusConfig, split: str, index: int, d: draws.Draws) -> dict:
  """Returns {"text"}: programs of `split`, each followed by '# output: VALUE'."""
  def snippet():
    program, value = _program(config.seed, split, d)
    return f"{program}\n# output: {value}"
  return {"text": "\n\n".join(text.fill(d, snippet, 100))}


def _output_probe(config: config_lib.CorpusConfig, d: draws.Draws) -> tuple[str, str, list[str]]:
  """Output: a held-out program, then '# output:' -> its printed value, against near misses."""
  program, value = _program(config.seed, "probe", d)
  return f"{program}\n# output:", str(value), text.numeric_distractors(d, value, 3, minimum=None)


# The explicit stream keys are the historical ones (list positions), which keep the corpus
# byte-identical to earlier runs and recorded results.
DOMAIN = registry.Domain(NAME, _document, stream_key=3, probe_kinds=(
    registry.ProbeKind("output", _output_probe, plain_stream=True),))
