"""Command-line entry: `python -m vit_jax.main --config=configs/<file>.py[:arg] --workdir=DIR [--config.k=v]`.

Every host of a multi-host job runs the same command; jax.distributed connects them.
"""
import functools
import os

# tf.data must not grab accelerators or flood the log; set before tensorflow is imported anywhere.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow only runs the input pipeline (decode, crop, resize: no oneDNN kernels); with oneDNN on
# it prints its notice at every import, past TF_CPP_MIN_LOG_LEVEL.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from vit_jax import config_cli, configuration, host_memory, multihost_flags, paths  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. configs/default.py:pretrain.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics (resumes if present).")
_RESTORE_STEP = flags.DEFINE_integer(
    "restore_step", None,
    "Resume from this kept checkpoint step instead of the newest; the newer steps are moved to "
    "<workdir>/checkpoints/set_aside/ (kept, not deleted).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv, kept_pages: host_memory.Outcome):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # The overrides are applied now: values that cannot work fail in one line, before jax starts.
  config, workdir = _CONFIG.value, paths.expand(_WORKDIR.value)
  configuration.expand_paths(config)
  config_cli.exit_on_bad_values(config, workdir)
  if not flags.FLAGS["verbosity"].present:  # the console shows progress and results; -v 0 for more
    logging.set_verbosity(logging.WARNING)
  logging.info("keep freed host pages: %s (%s)", kept_pages.applied, kept_pages.reason)
  multihost_flags.connect()
  from vit_jax import multihost  # pylint: disable=import-outside-toplevel
  with multihost.stop_together():
    from vit_jax.data.sources import hide_gpus_from_tensorflow  # pylint: disable=import-outside-toplevel
    hide_gpus_from_tensorflow()
    from vit_jax.data.pseudo_label_store import PseudoLabelError  # pylint: disable=import-outside-toplevel
    from vit_jax.data.score_maps import ScoreMapError  # pylint: disable=import-outside-toplevel
    from vit_jax.train.loop import train_and_evaluate  # pylint: disable=import-outside-toplevel
    try:
      result = train_and_evaluate(config, workdir, restore_step=_RESTORE_STEP.value)
    except (ScoreMapError, PseudoLabelError) as e:  # a teacher's output made for other data
      raise SystemExit(f"error: {e}") from None
  print(f"test loss: {result['test_loss']:.4f} over {int(result['test_examples'])} examples")
  print(f"final test accuracy: {result['test_accuracy']:.3f}")


if __name__ == "__main__":
  config_cli.exit_on_config_error()  # a mistyped key in one line, before jax starts
  # First, while this is the only thread: parsing the flags loads the config, which imports jax.
  app.run(functools.partial(main, kept_pages=host_memory.keep_freed_pages()))
