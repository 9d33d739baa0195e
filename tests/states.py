"""Stand-in train states for tests that need a saved run without training (or compiling) one."""
import pathlib

import jax
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def random_state(abstract_state, seed=0, scale=0.02):
  """A state of abstract_state's shapes, dtypes and shardings: normal floats of std `scale`, zero
  integers."""
  rng = np.random.default_rng(seed)

  def fill(leaf):
    if np.issubdtype(leaf.dtype, np.floating):
      value = rng.normal(0.0, scale, leaf.shape).astype(leaf.dtype)
    else:
      value = np.zeros(leaf.shape, leaf.dtype)
    return jax.device_put(value, leaf.sharding)
  return jax.tree.map(fill, abstract_state)


def digits_config(model_name="ViT-micro/4", stage="pretrain", eval_batch_size=64):
  """The default digits job (configs/default.py) with a small model (ViT-micro/4), locked."""
  from vit_jax.config_cli import load_config_file  # pylint: disable=import-outside-toplevel
  config = load_config_file(str(ROOT / f"configs/default.py:{stage}"))
  config.unlock()
  config.model_name = model_name
  config.eval_batch_size = eval_batch_size
  return config.lock()


def save_stand_in_run(config, workdir, *, step=1, scale=0.3, source=None):
  """Saves a random state of config's Setup as checkpoint `step` of workdir, as a finished run
  would leave it (no training, no compilation); returns workdir."""
  from vit_jax import checkpoint  # pylint: disable=import-outside-toplevel
  from vit_jax.data import sources  # pylint: disable=import-outside-toplevel
  from vit_jax.train.loop import setup  # pylint: disable=import-outside-toplevel
  source = source if source is not None else sources.get_source(config.data)
  state = random_state(setup(config, source).abstract_state, scale=scale)
  with checkpoint.Checkpointer(pathlib.Path(workdir) / checkpoint.CHECKPOINT_SUBDIR) as ckpt:
    ckpt.save(step, state, {"data_position": 0}, force=True)
  return workdir
