"""Task and mixture registrations for mixjax (installed as `mixjax_tasks`).

Importing this package registers: the embedded synthetic domains (`mixjax_synthetic_<domain>`)
and their mixture (`mixjax_synthetic_mix`), and the TFDS corpora (`mixjax_c4`,
`mixjax_wikipedia`). Local files: `mixjax.data.tasks.register_jsonl_task`.

Binaries call `register_all()` again after parsing gin, so bindings such as
`register_synthetic.num_docs = 2000` apply whatever the order of imports and bindings.
"""

from mixjax_tasks import synthetic_tasks
from mixjax_tasks import tfds_tasks


def register_all():
  """(Re-)registers every built-in task with the current gin bindings."""
  synthetic_tasks.register_synthetic()
  tfds_tasks.register_tfds_corpora()


register_all()
