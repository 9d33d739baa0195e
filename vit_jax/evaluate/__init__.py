"""Evaluation of a trained model beyond the trainer's running metrics: the command that runs it.

  plots.py        the confusion-matrix figure (matplotlib)
  report.py       what the command writes and prints: metrics.json, the figure, the summary
  command.py      python -m vit_jax.evaluate
The metrics themselves live below the trainer, in vit_jax/metrics/ (the trainer's evaluators use
them too); the passes over data that feed them are the trainer's (vit_jax/train/eval_pass.py,
train/evaluators.py).
"""
