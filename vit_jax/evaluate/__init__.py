"""Evaluation of a trained model beyond the trainer's running metrics, and the command that runs it.

  metrics.py      host-side metrics: top-1, per-class accuracy, confusion matrix, precision@1, (m)AP
  real_labels.py  ReaL-style labels: a set of correct classes per example, read from a labels file
  fewshot.py      few-shot linear evaluation: k shots per class, closed-form ridge regression
  plots.py        the confusion-matrix figure (matplotlib)
  report.py       what the command writes and prints: metrics.json, the figure, the summary
  command.py      python -m vit_jax.evaluate
The host-side modules (metrics, real_labels, fewshot) import neither jax nor TensorFlow; the passes
over data that feed them are the trainer's (vit_jax/train/eval_pass.py, train/evaluators.py).
"""
