"""Installs rest_jax: Reinforced Self-Training (ReST) in JAX/Flax."""
import setuptools

INSTALL_REQUIRES = [
    "jax>=0.4.30",
    "flax>=0.8.5",
    "optax>=0.2.2",
    "orbax-checkpoint>=0.5.20",
    "gin-config>=0.5.0",
    "tensorflow-datasets>=4.9.3",
    "seqio>=0.0.19",
    "sacrebleu>=2.4.0",
    "sentencepiece>=0.2.0",
    "tokenizers>=0.15",  # Tokenizers of Hugging Face checkpoints (init_policy="hf=DIR").
    "numpy>=1.26",
    "tqdm>=4.66",
    "matplotlib>=3.8",
    "tensorboard>=2.15",
    "scipy>=1.11",
]

EXTRAS_REQUIRE = {
    "test": ["pytest>=8.0", "pytest-xdist>=3.5"],
    # The peer benchmark compares against Hugging Face transformers on PyTorch (CPU wheels).
    "bench": ["torch>=2.2", "transformers>=4.40"],
    "cuda": ["jax[cuda12]"],
    "tpu": ["jax[tpu]"],
}

setuptools.setup(
    name="rest_jax",
    version="0.1.0",
    description="Reinforced Self-Training (ReST) for language models in JAX/Flax",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["rest_jax", "rest_jax.*"]),
    package_data={"rest_jax": ["data/ding/*", "data/ding/**/*", "data/de_en/*", "data/de_en/**/*",
                               "rewards/pretrained/**/*", "policies/pretrained/**/*"]},
    include_package_data=True,
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    license="Apache-2.0",
)
