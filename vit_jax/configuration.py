"""The complete, locked experiment config: every key with its default, so a typo is an error that names it.

Experiment files in configs/ start from `base_config()`, change what they need and return it locked.
"""
import math

import ml_collections

from vit_jax.data.defaults import default_data_config
from vit_jax.train.optim import default_optim_config

# Model fields a config may override, with their types; None keeps the registry variant's value.
MODEL_OVERRIDES = dict(
    hidden_size=int, num_layers=int, num_heads=int, mlp_dim=int, patch_size=int, classifier=str,
    representation_size=int, dropout_rate=float, attention_dropout_rate=float,
    stochastic_depth=float, gelu_approximate=bool, layer_norm_epsilon=float,
    head_bias_init=float, dtype=str, scan_layers=bool, remat_policy=str,
    attention_impl=str)


def base_config() -> ml_collections.ConfigDict:
  """All keys of an experiment; durations may be given in steps, epochs or examples."""
  config = ml_collections.ConfigDict()
  config.model_name = "ViT-B/16"
  # Typed None placeholders, so `--config.model.hidden_size=64` parses from the command line.
  config.model = ml_collections.ConfigDict({
      key: ml_collections.FieldReference(None, field_type=kind)
      for key, kind in MODEL_OVERRIDES.items()})

  data = default_data_config()
  data.image_size = 224
  data.augment = ml_collections.ConfigDict(dict(crop="inception", area_min=0.05, flip=True))
  config.data = data

  config.batch_size = 512          # global, over all processes
  config.eval_batch_size = 512
  config.seed = 0

  config.train = ml_collections.ConfigDict(dict(
      steps=0, epochs=0.0, examples=0,   # exactly one of them > 0
      accum_steps=1, label_smoothing=0.0,
      log_every=50, eval_every=0, checkpoint_every=500, keep_checkpoints=3,
  ))
  config.optim = default_optim_config()

  config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  config.sharding = "data_parallel"   # data_parallel | fsdp | fsdp_tensor
  # Under fsdp, tensors with fewer elements than fsdp_min_size stay replicated; a tensor of at least
  # fsdp_check_size elements that the rules leave replicated fails the run (with the list).
  config.fsdp_min_size = 16_384
  config.fsdp_check_size = 262_144
  config.init_from = ""               # workdir, Orbax checkpoint or public-format .npz to fine-tune from
  return config


def imagenet_data(config: ml_collections.ConfigDict, image_size: int = 224) -> None:
  """Points a config at TFDS imagenet2012 (train / validation) with the DeiT-era training crop
  (inception crop with area 0.08-1, horizontal flip), the recipe the family configs share."""
  config.data.source = "tfds"
  config.data.name = "imagenet2012"
  config.data.train_split = "train"
  config.data.test_split = "validation"
  config.data.image_size = image_size
  config.data.augment.crop = "inception"
  config.data.augment.area_min = 0.08
  config.data.augment.flip = True


def model_overrides(config: ml_collections.ConfigDict) -> dict:
  """The model fields the config sets (None means: keep the variant's value)."""
  return {key: value for key, value in config.model.items() if value is not None}


def total_steps(config: ml_collections.ConfigDict, num_train_examples: int) -> int:
  """Resolves the training duration to steps from whichever of steps, epochs, examples is set."""
  train = config.train
  given = [name for name in ("steps", "epochs", "examples") if train[name]]
  if len(given) != 1:
    raise ValueError(
        f"set exactly one of train.steps, train.epochs, train.examples (got {given or 'none'})")
  if train.steps:
    return int(train.steps)
  examples = train.examples if train.examples else train.epochs * num_train_examples
  return max(1, math.ceil(examples / config.batch_size))
