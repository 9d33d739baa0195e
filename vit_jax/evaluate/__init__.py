"""Evaluation of a trained model beyond the trainer's running metrics.

  metrics.py      host-side metrics: top-1, per-class accuracy, confusion matrix, precision@1, (m)AP
  real_labels.py  ReaL-style labels: a set of correct classes per example, read from a labels file
  fewshot.py      few-shot linear evaluation: k shots per class, closed-form ridge regression
The host-side modules import neither jax nor TensorFlow; the passes over data that feed them are the
trainer's evaluators (vit_jax/train/evaluators.py).
"""
