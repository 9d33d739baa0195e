"""Installs vit_jax; requirements.txt pins the exact versions that are known to install together."""
from setuptools import find_packages, setup

setup(
    name="vit_jax",
    version="0.1.0",
    description="Vision Transformers in JAX/Flax: sharded pretraining, fine-tuning and export.",
    packages=find_packages(include=["vit_jax", "vit_jax.*"]),
    package_data={"vit_jax.kernels": ["cpu_attention.cc"]},  # compiled on first use (cpu_attention.py)
    python_requires=">=3.11",
    install_requires=[
        "jax>=0.10,<0.11",
        "flax>=0.12.8,<0.13",
        "optax>=0.2.8,<0.3",
        "orbax-checkpoint>=0.12,<0.13",
        "chex>=0.1.90",
        "ml-collections>=1.1",
        "clu>=0.0.12",
        "numpy>=2.0",
        "tensorflow-cpu>=2.21,<2.22",
        "tensorflow-datasets>=4.9.10,<5",
        "tensorboard>=2.21,<2.22",   # clu's metric writers need it; not declared by tensorflow-cpu 2.21
        "importlib_resources>=6",    # tfds' prepare path imports it without declaring it
        "pillow>=10",
        "scikit-learn>=1.5",         # the embedded digits dataset
        "tqdm>=4.60",
        "absl-py>=2.0",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist>=3", "scipy>=1.11"],
        # vit_jax.export's safetensors and ONNX formats (npz and the SavedModel need nothing more).
        "export": ["safetensors>=0.6", "onnx>=1.20", "onnxruntime>=1.24", "jax2onnx>=0.12.5,<0.13.1"],
    },
)
