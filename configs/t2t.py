"""T2T-ViT on ImageNet-1k (TFDS imagenet2012) with the paper's recipe; the argument picks the variant.

  python -m vit_jax.main --config=configs/t2t.py:t2t_vit_14 --workdir=DIR
  python -m vit_jax.main --config=configs/t2t.py:t2t_vit_t_14 --workdir=DIR   # transformer T2T module

Recipe (official README / main.py, DeiT-style; docs/recipes.md#t2t): AdamW, batch 512, cosine to 1e-5
over 300 epochs after 10 warmup epochs, no gradient clipping, drop-path 0.1, label smoothing 0.1; lr 5e-4
and weight decay 0.05 (0.065 for -19/-24), the lite models (-7/-10/-12) lr 1e-3 and weight decay 0.03;
RandAugment m9, mixup 0.8 or cutmix 1.0 (one of them per batch, cutmix with probability 0.5:
mixup_or_cutmix), an EMA of the weights with decay 0.99996 (evaluated beside the weights).
Difference: timm's RandAugment ('rand-m9-mstd0.5-inc1') differs from ours in detail
(docs/recipes.md#randaugment). Not represented: the 10 cool-down epochs at the minimum learning rate
and random erasing 0.25 (main.py has no repeated augmentation).
"""
from vit_jax.configuration import base_config, imagenet_data, small_digits_job

_IMAGENET_TRAIN_EXAMPLES = 1_281_167
_BATCH_SIZE = 512
# variant argument -> (registry name, learning rate, weight decay)
_VARIANTS = {
    "t2t_vit_7": ("T2T-ViT-7", 1e-3, 0.03),
    "t2t_vit_10": ("T2T-ViT-10", 1e-3, 0.03),
    "t2t_vit_12": ("T2T-ViT-12", 1e-3, 0.03),
    "t2t_vit_14": ("T2T-ViT-14", 5e-4, 0.05),
    "t2t_vit_19": ("T2T-ViT-19", 5e-4, 0.065),
    "t2t_vit_24": ("T2T-ViT-24", 5e-4, 0.065),
    "t2t_vit_t_14": ("T2T-ViT_t-14", 5e-4, 0.05),
    "t2t_vit_t_19": ("T2T-ViT_t-19", 5e-4, 0.065),
    "t2t_vit_t_24": ("T2T-ViT_t-24", 5e-4, 0.065),
}


def get_config(variant="t2t_vit_14"):
  """The locked config of one T2T-ViT variant, e.g. 't2t_vit_14' or 't2t_vit_t_24'."""
  if variant == "test":  # T2T-ViT-test on the embedded digits, a few steps
    config = base_config("T2T-ViT-test")
    small_digits_job(config)
    return config.lock()
  if variant not in _VARIANTS:
    raise ValueError(f"configs/t2t.py takes one of {', '.join(_VARIANTS)}, got {variant!r}")
  model_name, learning_rate, weight_decay = _VARIANTS[variant]
  config = base_config(model_name)
  config.model.stochastic_depth = 0.1
  imagenet_data(config)
  # Label smoothing sits in the one-hot targets that mixup or cutmix mixes (as timm's mixup_target
  # does), since the loss uses mixed targets as given.
  config.data.pp_train = ("decode_jpeg_and_inception_crop(224, area_min=0.08)|flip_lr|randaug(2, 9)|"
                          "value_range(-1, 1)|onehot(smoothing=0.1)")
  config.data.pp_batch = "mixup_or_cutmix(0.8, 1.0)"  # one per batch, switch_prob 0.5 as main.py
  config.batch_size = _BATCH_SIZE
  config.eval_batch_size = _BATCH_SIZE
  config.train.epochs = 300.0
  config.evals.test.every = 5000
  config.optim.name = "adamw"
  config.optim.learning_rate = learning_rate
  config.optim.end_learning_rate = 1e-5
  config.optim.warmup_steps = round(10 * _IMAGENET_TRAIN_EXAMPLES / _BATCH_SIZE)
  config.optim.weight_decay = weight_decay
  config.optim.grad_clip_norm = 0.0  # the official recipe does not clip
  config.optim.ema_decay = 0.99996
  return config.lock()
