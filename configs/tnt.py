"""TNT on ImageNet-1k from scratch with the official recipe (docs/architectures.md#tnt-recipe).

  python -m vit_jax.main --config=configs/tnt.py:tnt_s --workdir=gs-or-local-dir \
      --config.data.data_dir=/path/to/tensorflow_datasets

Official: 300 epochs, AdamW lr 1e-3 at batch 1024, weight decay 0.05, drop-path 0.1, the DeiT schedule
(5 warmup epochs, cosine to 1e-5, label smoothing 0.1, no gradient clipping). Its RandAugment m9, mixup
0.8, cutmix 1.0, random erasing 0.25, repeated augmentation and EMA are not part of this trainer.
"""
from vit_jax.configuration import base_config, imagenet_data, small_digits_job

VARIANTS = {"tnt_s": "TNT-S/16", "tnt_b": "TNT-B/16"}
IMAGENET_TRAIN_EXAMPLES = 1_281_167


def get_config(variant="tnt_s"):
  if variant == "test":  # TNT-test on the embedded digits, a few steps
    config = base_config("TNT-test")
    small_digits_job(config)
    return config.lock()
  if variant not in VARIANTS:
    raise ValueError(f"configs/tnt.py takes one of {sorted(VARIANTS)}, got {variant!r}")
  config = base_config(VARIANTS[variant])
  config.model.stochastic_depth = 0.1
  imagenet_data(config)
  config.batch_size = 1024
  config.eval_batch_size = 1024
  config.train.epochs = 300.0
  config.train.label_smoothing = 0.1
  config.evals.test.every = 5000
  config.optim.name = "adamw"
  config.optim.learning_rate = 1e-3
  config.optim.end_learning_rate = 1e-5
  config.optim.warmup_steps = 5 * IMAGENET_TRAIN_EXAMPLES // config.batch_size
  config.optim.decay = "cosine"
  config.optim.weight_decay = 0.05
  config.optim.grad_clip_norm = 0.0
  return config.lock()
