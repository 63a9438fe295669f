"""Small synthetic tasks for scheduled-mixture tests, registered on import (gin files may
`import tests.mixture_tasks` so that a `python -m mixjax.train` subprocess sees them too)."""

import seqio

from mixjax_tasks import synthetic_tasks

PREFIX = "test_sched"
MIX = f"{PREFIX}_mix"  # five domains, 400 documents in all
TWO = f"{PREFIX}_two"  # math and web only: fewer pipelines, for the slower multi-build tests

synthetic_tasks.register_synthetic(num_docs=400, prefix=PREFIX)
seqio.MixtureRegistry.remove(TWO)
seqio.MixtureRegistry.add(TWO, [(f"{PREFIX}_math", 1.0), (f"{PREFIX}_web", 3.0)])
