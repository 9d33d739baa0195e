"""LV-ViT on ImageNet-1k (TFDS imagenet2012) with the paper's recipe; the argument picks the variant.

  python -m vit_jax.main --config=configs/lvvit.py:lvvit_s --workdir=DIR \
      --config.data.data_dir=/path/to/tensorflow_datasets

Recipe (official TokenLabeling README / main.py, docs/architectures.md#lvvit-recipe): 224 px, global
batch 1024, AdamW lr 1.6e-3 (1e-3 for L), weight decay 0.05, 300 epochs, 5 warmup epochs then cosine
to 1e-5, label smoothing 0.1, no gradient clipping, no mixup/cutmix, drop-path 0.1 / 0.2 / 0.3 (S / M / L).
The model trains on x_cls + 0.5 * max token logits, the output it is evaluated on (vit_jax/models/lvvit.py).
Not represented here: token labeling with MixToken (the model and the loss exist, see
vit_jax/train/token_labeling.py; the trainer does not call them yet), RandAugment rand-m9-mstd0.5-inc1
(rand-n3-m9 for L), random erasing 0.25, EMA 0.99992 and the 10 cool-down epochs.
"""
from vit_jax.configuration import base_config, imagenet_data, small_digits_job

IMAGENET_TRAIN_EXAMPLES = 1_281_167
_BATCH_SIZE = 1024
# variant argument -> (registry name, peak learning rate, drop-path rate)
VARIANTS = {
    "lvvit_s": ("LV-ViT-S", 1.6e-3, 0.1),
    "lvvit_m": ("LV-ViT-M", 1.6e-3, 0.2),
    "lvvit_l": ("LV-ViT-L", 1e-3, 0.3),
}


def get_config(variant="lvvit_s"):
  """The locked config of one LV-ViT variant: 'lvvit_s', 'lvvit_m' or 'lvvit_l'."""
  if variant == "test":  # LV-ViT-test on the embedded digits, a few steps
    config = base_config("LV-ViT-test")
    small_digits_job(config)
    return config.lock()
  if variant not in VARIANTS:
    raise ValueError(f"configs/lvvit.py takes one of {', '.join(VARIANTS)}, got {variant!r}")
  model_name, learning_rate, drop_path = VARIANTS[variant]
  config = base_config(model_name)
  config.model.stochastic_depth = drop_path
  imagenet_data(config)
  config.batch_size = _BATCH_SIZE
  config.eval_batch_size = _BATCH_SIZE
  config.train.epochs = 300.0
  config.train.label_smoothing = 0.1
  config.evals.test.every = 5000
  config.optim.name = "adamw"
  config.optim.learning_rate = learning_rate
  config.optim.end_learning_rate = 1e-5
  config.optim.warmup_steps = round(5 * IMAGENET_TRAIN_EXAMPLES / _BATCH_SIZE)
  config.optim.decay = "cosine"
  config.optim.weight_decay = 0.05
  config.optim.grad_clip_norm = 0.0  # the official recipe does not clip
  return config.lock()
