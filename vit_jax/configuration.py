"""The experiment schema: every config key with its default, in one module without jax or TensorFlow.

Experiment files in configs/ start from `base_config(model_name)`, change what they need and return
it locked, so a mistyped key is an error that names it. Loading a config imports neither jax nor
TensorFlow (tests/test_configuration.py checks the import set): every host parses its config first.
`build.setup` reads the config once and derives everything else from it.
"""
import difflib
import math
import os
from typing import Any, Optional

import ml_collections

from vit_jax import model_fields, paths, public_checkpoints

# Names the trainer's registries accept (vit_jax.train.losses, vit_jax.train.evaluators); listed
# here for the messages of a config that cannot work, checked again where they are built.
LOSS_AUTO = "auto"  # sigmoid_xent for multi-label sources, softmax_xent otherwise
# config.init_posemb (vit_jax.checkpoint.pretrained.INIT_POSEMB_MODES).
INIT_POSEMB_MODES = ("interpolate_2d", "interpolate_1d", "reset")


def data_config() -> ml_collections.ConfigDict:
  """config.data: every key a source or the pipeline reads."""
  return ml_collections.ConfigDict({
      "source": "digits",   # A registered source: digits, folder, tfds, jft (available_sources()).
      "name": "",           # TFDS dataset name: 'cifar10', 'imagenet2012:5.1.0', 'imagenet21k', ...
      "data_dir": ml_collections.config_dict.placeholder(str),  # TFDS data_dir; None: TFDS default.
      "download": False,    # TFDS only: download and prepare when not prepared (needs internet).
      "label_key": "label",  # TFDS only: the label feature (ClassLabel; a Sequence: multi-label).
      "root": "",           # folder: root/<class>/*.jpg or root/{train,test}/<class>/; jft: its dir.
      "train_split": "train",
      "test_split": "test",
      "test_fraction": 0.2,  # Held-out fraction for digits and folders without split subfolders.
      "image_size": 224,
      # Train augmentation when pp_train is empty: crop 'inception' (area in [area_min, 1]) or
      # 'resize', then an optional random horizontal flip.
      "augment": {"crop": "inception", "area_min": 0.05, "flip": True},
      # Example pipelines as pp strings (see vit_jax/data/pp.py), e.g.
      # 'decode|inception_crop(224)|flip_lr|value_range(-1,1)'. Empty: from augment (train) or
      # 'decode|resize(image_size)|value_range(-1,1)' (eval), plus multi_hot for multi-label sources.
      "pp_train": "",
      "pp_eval": "",
      "pp_batch": "",       # Train batch ops, e.g. 'mixup(0.2)' or 'cutmix(1.0)'; seeds: (seed, step).
      # A teacher's score maps of the train split (python -m vit_jax.token_labels): train batches
      # then carry each example's map and crop, for config.loss='token_label'.
      "score_maps": "",
      # Self-training (Noisy Student): the split `python -m vit_jax.pseudo_labels` labels, e.g.
      # 'train[10%:]' beside train_split='train[:10%]' (slices: vit_jax/data/split_slices.py) ...
      "unlabeled_split": "",
      # ... and a directory of such labels: the train split then also holds the examples they kept,
      # with the teacher's labels as targets (vit_jax/data/pseudo_labeled.py) ...
      "pseudo_labels": "",
      # ... among which each train_split example appears this many times per epoch (0: only the
      # pseudo-labelled examples): sets the ratio of labelled to pseudo-labelled examples.
      "labeled_repeats": 1,
      "shuffle_buffer": 10_000,  # Train shuffle buffer (encoded examples) per process.
      # False: each process reads its own share of the train split (scales to JFT). True: every
      # process reads the whole split in one global order and decodes only its slice of each
      # global batch, so the batches are the same for any number of processes.
      "global_order": False,
      "threads": 1,         # tf.data private thread pool size: keep small so XLA keeps the cores.
      "prefetch": 2,        # Batches prefetched by tf.data.
      # An evaluator keeps a split's preprocessed batches in host memory after the first pass
      # when they fit in this many MiB (per split it reads, per process; data/pass_cache.py):
      # later passes skip tf.data. 0: every pass reads the split through the pipeline.
      "eval_cache_mib": 512,
  })


def optim_config() -> ml_collections.ConfigDict:
  """config.optim: the optimizer, its schedule and per-parameter treatment (vit_jax.train.optim).

  Parameter rules match a whole '/'-joined parameter path (re.fullmatch), e.g.
  'Transformer/encoderblock_3/MlpBlock_0/Dense_0/kernel'; a rule that matches nothing is an error.
  Linear probe: freeze='(?!head/).*'. Head-only fine-tuning at 10x: lr_mults=('head/.*=10',).
  """
  return ml_collections.ConfigDict(dict(
      # adamw: decoupled weight decay, -lr * (adam(g) + wd * p); adam: weight decay as an L2 term
      # added to the gradient before the moments (torch.optim.Adam); sgd: momentum, then + wd * p;
      # 'optax:<name>': optax.<name>(**args), any optax optimizer (given learning_rate=the schedule,
      # plus optim.weight_decay decoupled and scaled by the schedule) or gradient transformation
      # (followed by the weight decay and -schedule). Registry: vit_jax.train.optim.register_optimizer.
      name="adamw",
      args={},                 # keyword arguments of an 'optax:<name>' optimizer, set in config files
      learning_rate=1e-3,      # peak learning rate, reached after warmup
      end_learning_rate=0.0,   # value at the last step (cosine, linear)
      warmup_steps=0,
      # After warmup: cosine | linear | constant | steps (learning_rate * decay_factor**k after the
      # k-th of `boundaries`, increasing fractions of the total steps, e.g. (1/3, 2/3, 8/9)).
      decay="cosine",
      boundaries=(),
      decay_factor=0.1,
      b1=0.9, b2=0.999, eps=1e-8,  # adam, adamw
      mu_dtype="",             # e.g. 'bfloat16' to halve Adam's first-moment memory; '' keeps float32
      momentum=0.9, nesterov=False,  # sgd
      weight_decay=0.0,        # never applied to biases, norms, cls or position embeddings
      grad_clip_norm=1.0,      # global-norm clipping of the trained parameters' gradients; 0 disables
      # Per-parameter multipliers: 'regex=multiplier' strings, the first matching rule wins, default 1.
      lr_mults=(),             # e.g. ('head/.*=10',)
      wd_mults=(),             # multiplies weight_decay on the decayed kernels, e.g. ('head/.*=0',)
      freeze="",               # regex of parameters that get no update and no optimizer state
      # BEiT/timm layer-wise lr decay (0 = off): lr * layer_decay**(num_layers + 1 - layer_id), layer_id
      # 0 for the embeddings, i+1 for block i, num_layers+1 for the final norm and head.
      layer_decay=0.0,
      # EMA of the weights (0 = off): ema = d * ema + (1 - d) * params after each step, kept in the
      # optimizer state (sharded and checkpointed with it); vit_jax.train.optim.ema_params reads it.
      ema_decay=0.0,
      # N > 0: a step whose gradient holds NaN or Inf changes no parameter or optimizer state (counted
      # as skipped_nonfinite_steps) and N such steps in a row stop the run (checked when logging and
      # before each checkpoint);
      # 0: a non-finite loss stops the run. Either way no checkpoint ever holds NaN or Inf.
      skip_nonfinite=0,
  ))


def model_config(model_name: str) -> ml_collections.ConfigDict:
  """config.model: one typed None placeholder per field of the model's family (None keeps the
  variant's value), so `--config.model.<field>=...` parses for every field of that family."""
  return ml_collections.ConfigDict({
      key: ml_collections.FieldReference(None, field_type=kind)
      for key, kind in model_fields.family_fields(model_name).items()})


def eval_config(every: int = 0, split: str = "", kind: str = "classification", **options
                ) -> ml_collections.ConfigDict:
  """One entry of config.evals: a registered evaluator `type` run every `every` steps (0: at the end
  only) on `split` ('' means data.test_split) with its keyword `options` (e.g. few-shot's `shots`;
  `data`, a dict of config.data keys, evaluates another dataset); its metrics are logged as
  '<entry name>_<metric>'."""
  return ml_collections.ConfigDict(dict(type=kind, every=every, split=split, options=options))


def base_config(model_name: str = "ViT-B/16") -> ml_collections.ConfigDict:
  """All keys of an experiment; durations may be given in steps, epochs or examples."""
  config = ml_collections.ConfigDict()
  config.model_name = model_name
  config.model = model_config(model_name)
  config.data = data_config()

  config.batch_size = 512          # global, over all processes
  config.eval_batch_size = 512
  config.seed = 0
  # A registered loss (vit_jax.train.losses): softmax_xent, sigmoid_xent, token_label, masked_patch,
  # or 'auto'.
  config.loss = LOSS_AUTO
  # Keyword options of that loss, e.g. token_label's dense_weight (a config sets the ones it uses).
  config.loss_options = ml_collections.ConfigDict()

  config.train = ml_collections.ConfigDict(dict(
      steps=0, epochs=0.0, examples=0,   # exactly one of them > 0
      accum_steps=1, label_smoothing=0.0,
      log_every=50, checkpoint_every=500, keep_checkpoints=3,
  ))
  config.optim = optim_config()
  # Named evaluators (vit_jax.train.evaluators); 'test' is also the final evaluation.
  config.evals = ml_collections.ConfigDict({"test": eval_config()})

  config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  config.sharding = "data_parallel"   # data_parallel | fsdp | fsdp_tensor
  # Under fsdp, tensors with fewer elements than fsdp_min_size stay replicated; a tensor of at least
  # fsdp_check_size elements that the rules leave replicated fails the run (with the list).
  config.fsdp_min_size = 16_384
  config.fsdp_check_size = 262_144
  config.init_from = ""               # workdir, Orbax checkpoint or public-format .npz to fine-tune from
  # What init_from's position embeddings become when the model's token grid differs: 'interpolate_2d'
  # (bilinear over the grid, the reference), 'interpolate_1d' (the patch rows interpolated as one
  # sequence, grid ignored) or 'reset' (the new model's fresh init).
  config.init_posemb = "interpolate_2d"
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


def small_digits_job(config: ml_collections.ConfigDict, image_size: int = 32) -> None:
  """The family configs' 'test' argument: their tiny variant on the embedded digits, a few steps of
  a small batch, so that every family runs end to end on a laptop (and in the tests)."""
  config.data.source = "digits"
  config.data.image_size = image_size
  config.data.augment.area_min = 0.8   # an 8x8 digit loses its identity under small crops
  config.data.augment.flip = False      # a mirrored digit is another glyph
  config.batch_size = 32
  config.eval_batch_size = 128
  config.train.epochs = 0.0
  config.train.steps = 4
  config.train.log_every = 2
  config.train.checkpoint_every = 4
  config.evals.test.every = 0
  config.optim.warmup_steps = 1


def model_overrides(config: ml_collections.ConfigDict) -> dict:
  """The model fields the config sets (None means: keep the variant's value)."""
  return {key: value for key, value in config.model.items() if value is not None}


DURATIONS = ("steps", "epochs", "examples")


def durations_given(config: ml_collections.ConfigDict) -> list[str]:
  """The duration keys of config.train that are set (exactly one must be)."""
  return [name for name in DURATIONS if config.train[name]]


def total_steps(config: ml_collections.ConfigDict, num_train_examples: int) -> int:
  """Resolves the training duration to steps from whichever of steps, epochs, examples is set."""
  train = config.train
  given = durations_given(config)
  if len(given) != 1:
    raise ValueError(
        f"set exactly one of train.steps, train.epochs, train.examples (got {given or 'none'})")
  if train.steps:
    return int(train.steps)
  examples = train.examples if train.examples else train.epochs * num_train_examples
  return max(1, math.ceil(examples / config.batch_size))


class ConfigError(ValueError):
  """A config value that cannot work; the message names the key and what to do."""


# Keys that hold local paths or URLs; `expand_paths` expands their `~`.
PATH_KEYS = ("init_from", "data.root", "data.data_dir", "data.pseudo_labels", "data.score_maps")


def expand_paths(config: ml_collections.ConfigDict) -> None:
  """Expands `~` in the path keys (PATH_KEYS) of config, in place (a locked config too)."""
  for dotted in PATH_KEYS:
    *parents, key = dotted.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    if node[key]:
      node[key] = paths.expand(node[key])


def _at_least(config: ml_collections.ConfigDict, dotted: str, minimum: int, meaning: str) -> None:
  node = config
  for part in dotted.split("."):
    node = node[part]
  if node < minimum:
    raise ConfigError(f"config.{dotted}={node}: {meaning} must be at least {minimum}; "
                      f"set --config.{dotted} to a value >= {minimum}")


def check_values(config: ml_collections.ConfigDict, workdir: Optional[str] = None) -> None:
  """Raises ConfigError, naming the key, for a value that cannot work; needs no jax or data.

  Checks what can be known before anything is built: positive step intervals and batch sizes,
  batch_size divisible by train.accum_steps, one duration, warmup shorter than train.steps, a known
  init_posemb, an init_from, a data.pseudo_labels and a data.score_maps that exist (local paths;
  URLs are not checked), a public checkpoint name's model (vit_jax/public_checkpoints.py), score
  maps for the token_label loss, and a workdir that is not a file.
  Divisibility by the mesh needs the devices and is checked when the mesh is built.
  """
  train = config.train
  _at_least(config, "train.log_every", 1, "steps between logged metrics")
  _at_least(config, "train.checkpoint_every", 1, "steps between checkpoints")
  _at_least(config, "train.keep_checkpoints", 1, "the number of checkpoints kept")
  _at_least(config, "train.accum_steps", 1, "micro-batches per step")
  _at_least(config, "batch_size", 1, "the global batch size")
  _at_least(config, "eval_batch_size", 1, "the global eval batch size")
  if config.batch_size % train.accum_steps:
    raise ConfigError(
        f"config.batch_size={config.batch_size} is not divisible by config.train.accum_steps="
        f"{train.accum_steps}: set batch_size to a multiple of accum_steps")
  for key in DURATIONS:
    _at_least(config, f"train.{key}", 0, "a duration")
  given = [f"train.{key}" for key in durations_given(config)]
  if len(given) != 1:
    raise ConfigError(f"set exactly one of config.train.steps, train.epochs, train.examples "
                      f"(got {', '.join(given) or 'none'}); set the others to 0")
  _at_least(config, "optim.warmup_steps", 0, "a number of steps")
  if train.steps and config.optim.warmup_steps >= train.steps:
    raise ConfigError(
        f"config.optim.warmup_steps={config.optim.warmup_steps} is not below config.train.steps="
        f"{train.steps}: lower warmup_steps (or train longer)")
  _at_least(config, "data.labeled_repeats", 0, "passes over the labelled split per epoch")
  _at_least(config, "data.eval_cache_mib", 0, "MiB of eval batches kept in host memory")
  pseudo_labels = paths.expand(config.data.pseudo_labels)
  if pseudo_labels and not os.path.isdir(pseudo_labels):
    raise ConfigError(f"config.data.pseudo_labels={config.data.pseudo_labels!r} does not exist: set "
                      "it to a directory written by python -m vit_jax.pseudo_labels, or clear it")
  score_maps = paths.expand(config.data.score_maps)
  if score_maps and not os.path.isdir(score_maps):
    raise ConfigError(f"config.data.score_maps={config.data.score_maps!r} does not exist: set it to "
                      "a directory written by python -m vit_jax.token_labels, or clear it")
  if config.loss == "token_label" and not score_maps:
    raise ConfigError("config.loss='token_label' trains on a teacher's score maps, and "
                      "config.data.score_maps is empty: write them with python -m "
                      "vit_jax.token_labels and set --config.data.score_maps to their directory")
  if config.init_posemb not in INIT_POSEMB_MODES:
    raise ConfigError(f"config.init_posemb={config.init_posemb!r} is not a way to carry position "
                      f"embeddings to a new grid: set it to one of {', '.join(INIT_POSEMB_MODES)}")
  init_from = paths.expand(config.init_from)
  if public_checkpoints.lookup(init_from):
    try:
      public_checkpoints.check_fits(init_from, config.model_name,
                                    config.model.get("classifier") or "token")
    except ValueError as e:
      raise ConfigError(str(e)) from None
  elif init_from and not paths.is_url(init_from) and not os.path.exists(init_from):
    raise ConfigError(f"config.init_from={config.init_from!r} does not exist: set it to a workdir, "
                      "an Orbax checkpoint, an .npz file or the name of a public checkpoint ("
                      f"{public_checkpoints.unknown_name_hint(init_from)})")
  workdir = paths.expand(workdir)
  if workdir and os.path.isfile(workdir):
    raise ConfigError(f"workdir {workdir!r} is a file: give a directory (new or of an earlier run)")


def _dotted_keys(node: Any, prefix: str = "") -> list[str]:
  keys = []
  for key, value in node.items():
    keys.append(prefix + key)
    if isinstance(value, ml_collections.ConfigDict):
      keys.extend(_dotted_keys(value, prefix + key + "."))
  return keys


def unknown_key_message(config: ml_collections.ConfigDict, dotted: str) -> str:
  """One line for a key the schema does not have, with the closest keys anywhere in the config
  (a key under the wrong section, such as train.learning_rate, finds optim.learning_rate)."""
  everywhere = _dotted_keys(config)
  by_name: dict[str, list[str]] = {}
  for key in everywhere:
    by_name.setdefault(key.rsplit(".", 1)[-1], []).append(key)
  names = difflib.get_close_matches(dotted.rsplit(".", 1)[-1], list(by_name), n=3, cutoff=0.75)
  close = [key for name in names for key in by_name[name]]
  close += [key for key in difflib.get_close_matches(dotted, everywhere, n=3) if key not in close]
  hint = f"; did you mean {', '.join('config.' + key for key in close[:4])}?" if close else ""
  return f"unknown config key config.{dotted}{hint}"
