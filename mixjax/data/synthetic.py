"""Alias kept for the documented command `python -m mixjax.data.synthetic`: runs
`python -m mixjax.testbed` (the testbed lives in `mixjax/testbed/`; data never imports it)."""

import runpy

if __name__ == "__main__":
  runpy.run_module("mixjax.testbed", run_name="__main__", alter_sys=True)
