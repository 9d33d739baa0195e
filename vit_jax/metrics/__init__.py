"""Metrics computed on the host from per-example scores, shared by the trainer's evaluators and the
evaluation command (vit_jax/evaluate). They import neither jax nor TensorFlow.

  classification.py  top-1, per-class accuracy, confusion matrix, precision@1, (m)AP
  real_labels.py     ReaL-style labels: a set of correct classes per example, read from a labels file
  fewshot.py         few-shot linear evaluation: k shots per class, closed-form ridge regression
"""
