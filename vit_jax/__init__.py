"""vit_jax: Vision Transformers in JAX/Flax, from pod-scale pretraining to fine-tuning and export."""
