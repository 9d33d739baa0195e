"""Evaluation of a trained model beyond the trainer's running metrics.

  metrics.py      host-side metrics: top-1, per-class accuracy, confusion matrix, precision@1, (m)AP
The host-side modules import neither jax nor TensorFlow; the passes over data that feed them are the
trainer's evaluators (vit_jax/train/evaluators.py).
"""
