"""mixjax: a JAX codebase for pretraining-data-mixture research."""

import setuptools

setuptools.setup(
    name="mixjax",
    version="0.1.0",
    description="Data mixtures, UL2 denoisers, end-of-training upsampling and in-context "
    "document ordering for Flax language models.",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # `tasks` is installed under the collision-free name `mixjax_tasks`.
    # `gin/` ships as package data under mixjax/gin (`mixjax.gin_utils.gin_path`).
    packages=setuptools.find_packages(include=["mixjax", "mixjax.*"]) + ["mixjax_tasks",
                                                                          "mixjax.gin"],
    package_dir={"mixjax_tasks": "tasks", "mixjax.gin": "gin"},
    package_data={"mixjax.gin": ["*.gin", "*/*.gin"]},
    install_requires=[
        "jax>=0.10.2",
        "flax>=0.12",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12",
        "seqio>=0.0.20",
        "tensorflow-datasets>=4.9",
        "gin-config>=0.5",
        "sentencepiece",
        "tokenizers",    # mixjax.vocab's 'hf' kind (a tokenizer.json)
        "safetensors",   # mixjax.compat.hf reads and writes Hugging Face checkpoints
        "numpy",
        "tqdm",
        "tensorboardX",
        "faiss-cpu",
        "lightgbm>=4",
        "matplotlib",
    ],
    extras_require={
        "dev": ["pytest>=7", "pytest-xdist", "hypothesis", "nbformat", "nbclient", "ipykernel"],
        "embed": ["sentence-transformers"],
        "beam": ["apache-beam"],
        "gpu": ["jax[cuda13]"],
        "tpu": ["jax[tpu]"],
        # The Hugging Face parity tests (tests/test_hf_*.py): the reference models. torch pinned:
        # 2.13.0 is the CPU build on the machines' disk (a bare `torch` pulls a CUDA build).
        "hf": ["torch==2.13.0", "transformers", "tokenizers", "safetensors"],
    },
)
