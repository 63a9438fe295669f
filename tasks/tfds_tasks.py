"""SeqIO tasks over TFDS text corpora (downloaded/prepared by TFDS; tested with mock data)."""

from mixjax.data import tasks

TFDS_CORPORA = {
    # task name: (tfds name, text feature)
    "mixjax_c4": ("c4/en:3.1.0", "text"),
    "mixjax_wikipedia": ("wikipedia/20230601.en:1.0.0", "text"),
}


def register_tfds_corpora(tfds_data_dir: str | None = None):
  for name, (tfds_name, text_key) in TFDS_CORPORA.items():
    tasks.register_tfds_task(name, tfds_name, text_key=text_key, tfds_data_dir=tfds_data_dir)
