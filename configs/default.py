"""The default job on the embedded digits data: pretrain a small ViT at 16 px, fine-tune it at 32 px.

  python -m vit_jax.main --config=configs/default.py:pretrain --workdir=workdir/default/pretrain
  python -m vit_jax.main --config=configs/default.py:finetune --workdir=workdir/default/finetune \
      --config.init_from=workdir/default/pretrain
"""
from vit_jax.configuration import base_config


def get_config(stage="pretrain"):
  config = base_config("ViT-tiny/4")
  config.data.source = "digits"
  config.data.augment.crop = "inception"
  config.data.augment.area_min = 0.8   # an 8x8 digit loses its identity under small crops
  config.data.augment.flip = False      # a mirrored digit is another glyph
  config.batch_size = 128
  config.eval_batch_size = 256
  config.train.log_every = 20
  config.train.checkpoint_every = 200
  if stage == "pretrain":
    config.data.image_size = 16
    config.train.epochs = 60.0
    config.optim.name = "adamw"
    config.optim.learning_rate = 3e-3
    config.optim.warmup_steps = 30
    config.optim.weight_decay = 0.05
    config.model.dropout_rate = 0.0
  elif stage == "finetune":
    config.data.image_size = 32          # twice the resolution: position embeddings resized 4x4 -> 8x8
    config.train.epochs = 20.0
    config.optim.name = "sgd"
    config.optim.momentum = 0.9
    config.optim.learning_rate = 0.03
    config.optim.warmup_steps = 10
    config.optim.grad_clip_norm = 1.0
  else:
    raise ValueError(f"configs/default.py takes 'pretrain' or 'finetune', got {stage!r}")
  # The digits are equal-size images in memory: augment whole batches (one op per batch, not one
  # tf.data call per example), the same inception crop as config.data.augment describes.
  config.data.pp_train = "decode"
  config.data.pp_batch = (f"inception_crop({config.data.image_size}, "
                          f"area_min={config.data.augment.area_min})|value_range(-1, 1)")
  return config.lock()
