"""TNT on ImageNet-1k from scratch with the official recipe (docs/recipes.md#tnt).

  python -m vit_jax.main --config=configs/tnt.py:tnt_s --workdir=gs-or-local-dir \
      --config.data.data_dir=/path/to/tensorflow_datasets

Official (DeiT's training code): 300 epochs, AdamW lr 1e-3 at batch 1024, weight decay 0.05, drop-path
0.1, 5 warmup epochs then cosine to 1e-5, no gradient clipping, label smoothing 0.1, RandAugment m9,
mixup 0.8 or cutmix 1.0 (one of them per batch, cutmix with probability 0.5: mixup_or_cutmix),
an EMA of the weights with decay 0.99996 (evaluated beside the weights). Difference: timm's
RandAugment ('rand-m9-mstd0.5-inc1') differs from ours in detail (docs/recipes.md#randaugment).
Not part of this trainer: random erasing 0.25 and repeated augmentation.
"""
from vit_jax.configuration import base_config, imagenet_data, small_digits_job

VARIANTS = {"tnt_s": "TNT-S/16", "tnt_b": "TNT-B/16"}
IMAGENET_TRAIN_EXAMPLES = 1_281_167
# The DeiT augmentation as pipelines: label smoothing sits in the one-hot targets that mixup or
# cutmix mixes (as timm's mixup_target does), since the loss uses mixed targets as given.
PP_TRAIN = ("decode_jpeg_and_inception_crop(224, area_min=0.08)|flip_lr|randaug(2, 9)|"
            "value_range(-1, 1)|onehot(smoothing=0.1)")
PP_BATCH = "mixup_or_cutmix(0.8, 1.0)"  # timm's Mixup(switch_prob=0.5, mode='batch')


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
  config.data.pp_train = PP_TRAIN
  config.data.pp_batch = PP_BATCH
  config.batch_size = 1024
  config.eval_batch_size = 1024
  config.train.epochs = 300.0
  config.evals.test.every = 5000
  config.optim.name = "adamw"
  config.optim.learning_rate = 1e-3
  config.optim.end_learning_rate = 1e-5
  config.optim.warmup_steps = 5 * IMAGENET_TRAIN_EXAMPLES // config.batch_size
  config.optim.decay = "cosine"
  config.optim.weight_decay = 0.05
  config.optim.grad_clip_norm = 0.0
  config.optim.ema_decay = 0.99996
  return config.lock()
