"""Every key of config.data with its default, in a module without TensorFlow so configs load anywhere."""
import ml_collections


def default_data_config() -> ml_collections.ConfigDict:
  """Returns the data config with every key a source or the pipeline reads (lockable)."""
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
      # Example pipelines as pp strings (see vit_jax/data/pp.py), e.g.
      # 'decode|inception_crop(224)|flip_lr|value_range(-1,1)'. Empty: from config.data.augment
      # (train) or 'decode|resize(image_size)|value_range(-1,1)' (eval), plus multi_hot for
      # multi-label sources.
      "pp_train": "",
      "pp_eval": "",
      "pp_batch": "",       # Train batch ops, e.g. 'mixup(0.2)' or 'cutmix(1.0)'; seeds: (seed, step).
      "shuffle_buffer": 10_000,  # Train shuffle buffer (encoded examples) per process.
      # False: each process reads its own share of the train split (scales to JFT). True: every
      # process reads the whole split in one global order and decodes only its slice of each
      # global batch, so the batches are the same for any number of processes.
      "global_order": False,
      "threads": 1,         # tf.data private thread pool size: keep small so XLA keeps the cores.
      "prefetch": 2,        # Batches prefetched by tf.data.
  })
