"""Runs `python -m vit_jax.evaluate` (see vit_jax/evaluate/command.py)."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from absl import app  # noqa: E402

from vit_jax import config_cli  # noqa: E402
from vit_jax.evaluate import command  # noqa: E402

if __name__ == "__main__":
  command.define_flags()
  config_cli.exit_on_config_error()
  app.run(command.main)
