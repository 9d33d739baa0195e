"""LV-ViT trained with token labeling: the paper's ImageNet recipes, and the same method on the digits.

ImageNet (the argument picks the variant; the score maps are a teacher's, see vit_jax.token_labels):

  python -m vit_jax.main --config=configs/lvvit.py:lvvit_s --workdir=DIR \
      --config.data.data_dir=/path/to/tensorflow_datasets --config.data.score_maps=MAPS

Recipe (official TokenLabeling README / main.py, docs/architectures.md#lvvit-recipe): 224 px, global
batch 1024, AdamW lr 1.6e-3 (1e-3 for L), weight decay 0.05, 300 epochs, 5 warmup epochs then cosine
to 1e-5, label smoothing 0.1, no gradient clipping, no mixup/cutmix (MixToken instead, every step),
RandAugment rand-m9 (2 ops; 3 for L), drop-path 0.1 / 0.2 / 0.3 (S / M / L), token labeling with
dense weight 0.5 (the paper's; the official main.py defaults to 1.0) on the teacher's maps, with the
official box order; RandAugment's geometric ops move the targets
(docs/architectures.md#token-labeling-pipeline). Not represented: random erasing 0.25, EMA 0.99992,
the 10 cool-down epochs.

The digits: 'digits' trains LV-ViT-test plainly, 'digits_token_label' the same model with the same
budget and seed on score maps of the default job's ViT trained with a GAP head (README, "Token
labeling").
"""
from vit_jax.configuration import base_config, imagenet_data, small_digits_job

IMAGENET_TRAIN_EXAMPLES = 1_281_167
_BATCH_SIZE = 1024
# variant argument -> (registry name, peak learning rate, drop-path rate, RandAugment ops)
VARIANTS = {
    "lvvit_s": ("LV-ViT-S", 1.6e-3, 0.1, 2),
    "lvvit_m": ("LV-ViT-M", 1.6e-3, 0.2, 2),
    "lvvit_l": ("LV-ViT-L", 1e-3, 0.3, 3),
}
DIGITS = ("digits", "digits_token_label")
DIGITS_SCORE_MAPS = "workdir/teacher/score_maps"  # where the README's annotator command writes them


def token_labeling(config, *, official_box_order: bool) -> None:
  """Trains on the teacher's score maps with MixToken: class CE + 0.5 x mean token CE."""
  config.loss = "token_label"
  config.loss_options.dense_weight = 0.5
  config.loss_options.official_box_order = official_box_order
  config.model.mix_token = True


def get_config(variant="lvvit_s"):
  """The locked config of one variant: 'lvvit_s', 'lvvit_m', 'lvvit_l', 'digits',
  'digits_token_label' or 'test'."""
  if variant == "test":  # LV-ViT-test on the embedded digits, a few steps
    config = base_config("LV-ViT-test")
    small_digits_job(config)
    return config.lock()
  if variant in DIGITS:
    return _digits(variant == "digits_token_label").lock()
  if variant not in VARIANTS:
    raise ValueError(f"configs/lvvit.py takes one of {', '.join((*VARIANTS, *DIGITS))} or 'test', "
                     f"got {variant!r}")
  model_name, learning_rate, drop_path, randaug_ops = VARIANTS[variant]
  config = base_config(model_name)
  config.model.stochastic_depth = drop_path
  imagenet_data(config)
  config.data.pp_train = ("decode_jpeg_and_inception_crop(224, area_min=0.08)|flip_lr|"
                          f"randaug({randaug_ops}, 9)|value_range(-1, 1)")
  token_labeling(config, official_box_order=True)
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


def _digits(with_token_labels: bool):
  """LV-ViT-test (4x4 tokens at 32 px) on the digits, as the default job trains its ViT."""
  config = base_config("LV-ViT-test")
  small_digits_job(config)
  config.batch_size = 128
  config.eval_batch_size = 256
  config.train.steps = 0
  config.train.epochs = 40.0
  config.train.log_every = 20
  config.train.checkpoint_every = 200
  config.train.label_smoothing = 0.1
  config.evals.test.every = 40
  config.optim.name = "adamw"
  config.optim.learning_rate = 3e-3
  config.optim.warmup_steps = 30
  config.optim.weight_decay = 0.05
  config.data.pp_train = "decode"  # whole-batch augmentation, as configs/default.py
  config.data.pp_batch = "inception_crop(32, area_min=0.8)|value_range(-1, 1)"
  if with_token_labels:
    token_labeling(config, official_box_order=False)  # the geometric box: crops are not square
    config.data.score_maps = DIGITS_SCORE_MAPS
  return config
