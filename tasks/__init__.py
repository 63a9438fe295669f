"""SeqIO task and mixture registrations for mixjax (installed as `mixjax_tasks`).

Importing this package registers: the embedded synthetic domains (`mixjax_synthetic_<domain>`)
and their mixture (`mixjax_synthetic_mix`), and the TFDS corpora (`mixjax_c4`,
`mixjax_wikipedia`). Local files: `mixjax.data.tasks.register_jsonl_task`.
"""

from mixjax_tasks import synthetic_tasks
from mixjax_tasks import tfds_tasks

synthetic_tasks.register_synthetic()
tfds_tasks.register_tfds_corpora()
