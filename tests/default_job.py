"""The default job's trained checkpoint as a finished run's workdir, for the tests of the commands that
read one (evaluate, predict, analysis, export).

tests/fixtures/default_job.npz is the checkpoint `make run` ends with (ViT-tiny/4 pretrained on the
digits at 16 px, fine-tuned at 32 px for 225 steps), exported as npz by
tests/fixtures/make_default_job_checkpoint.sh; its model card lies beside it. `save_run` puts those parameters into a train state of the same config and saves it as
the trainer does (checkpoint, config.json, class_names.json), without training or compiling.
"""
import pathlib

import jax

from .states import ROOT, random_state

FIXTURE = ROOT / "tests/fixtures/default_job.npz"
STEP = 225
# The trainer's own final evaluation of this checkpoint (the fixture's model card): 354 of 359 right.
TEST_EXAMPLES, TEST_ACCURACY, TEST_LOSS = 359, 354 / 359, 0.0386787


def config():
  from vit_jax.config_cli import load_config_file  # pylint: disable=import-outside-toplevel
  return load_config_file(str(ROOT / "configs/default.py:finetune"))


def save_run(workdir) -> pathlib.Path:
  """Writes the fixture's parameters as checkpoint STEP of a run of configs/default.py:finetune in
  `workdir` (optimizer moments zero), with the run's config.json and class names; returns workdir."""
  # pylint: disable=import-outside-toplevel
  from vit_jax import checkpoint, run_files
  from vit_jax.checkpoint.params import restore_params
  from vit_jax.data import sources
  from vit_jax.train.loop import save_config, setup
  # pylint: enable=import-outside-toplevel
  job = config()
  source = sources.get_source(job.data)
  abstract = setup(job, source).abstract_state
  params = jax.tree.map(lambda value, leaf: jax.device_put(value, leaf.sharding),
                        restore_params(str(FIXTURE)), abstract.params)
  state = random_state(abstract, scale=0.0).replace(params=params)
  with checkpoint.Checkpointer(pathlib.Path(workdir) / checkpoint.CHECKPOINT_SUBDIR) as ckpt:
    ckpt.save(STEP, state, {"data_position": 0}, force=True)
  save_config(job, str(workdir))
  run_files.write_class_names(str(workdir), source.class_names())
  return pathlib.Path(workdir)
