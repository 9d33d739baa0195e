"""BiT ResNet-v2 trained from scratch on ImageNet-1k: the BiT-S upstream recipe (Kolesnikov et al. 2020).

  python -m vit_jax.main --config=configs/bit.py:R50x1 --workdir=gs-or-local-dir \
      --config.data.data_dir=/path/to/tensorflow_datasets

Paper: SGD momentum 0.9, batch 4096, lr 0.03 x batch/256 = 0.48, 5000 linear warmup steps, 90 epochs,
weight decay 1e-4, inception crop + flip at 224, no gradient clipping. The paper divides the learning rate
by 10 at epochs 30, 60 and 80; this trainer's schedules are cosine/linear/constant, so cosine stands in.
"""
from vit_jax.configuration import base_config, imagenet_data, small_digits_job

VARIANTS = ("R50x1", "R50x3", "R101x1", "R101x3", "R152x2", "R152x4")


def get_config(variant="R50x1"):
  """`variant` is the depth and width, e.g. 'R50x1' (or the registry name 'BiT-R50x1')."""
  if variant == "test":  # BiT-testing on the embedded digits, a few steps
    config = base_config("BiT-testing")
    small_digits_job(config)
    return config.lock()
  variant = variant[len("BiT-"):] if variant.startswith("BiT-") else variant
  if variant not in VARIANTS:
    raise ValueError(f"configs/bit.py takes one of {', '.join(VARIANTS)}, got {variant!r}")
  config = base_config(f"BiT-{variant}")
  imagenet_data(config)
  config.batch_size = 4096
  config.eval_batch_size = 1024
  config.train.epochs = 90.0
  config.evals.test.every = 5000
  config.optim.name = "sgd"
  config.optim.momentum = 0.9
  config.optim.learning_rate = 0.03 * config.batch_size / 256
  config.optim.warmup_steps = 5000
  config.optim.decay = "cosine"
  config.optim.weight_decay = 1e-4
  config.optim.grad_clip_norm = 0.0
  return config.lock()
