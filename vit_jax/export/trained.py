"""A finished run as the exporters see it: its variables, its model rebuilt from the run's config.json,
and the run's directory (for the model card).

Every format but npz needs the architecture, which only the run's config.json states: the source must
then be a training workdir, its checkpoints/ directory or a step directory inside it. Exports run in
float32 with unrolled layers and XLA attention, whatever the run trained with: the same function,
in the form every converter and runtime reads.
"""
import dataclasses
import functools
import os
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp
import ml_collections
import numpy as np

from vit_jax import configuration
from vit_jax import run_files
from vit_jax.checkpoint import layers_layout
from vit_jax.checkpoint.params import restore_model_state, restore_params
from vit_jax.convert.core import expected_leaves
from vit_jax.data.pipeline import default_pp_eval
from vit_jax.models.registry import create_model

# Model fields set for every export, where the family has them (the function is unchanged).
EXPORT_FIELDS = {"dtype": jnp.float32, "attention_impl": "xla", "scan_layers": False}


@dataclasses.dataclass(frozen=True)
class Trained:
  """The variables of a checkpoint and, when it lies in a run's workdir, that run's config."""
  source: str                                 # the checkpoint the user named
  variables: dict[str, Any]                   # {'params': ..., other collections}: numpy, unrolled
  workdir: Optional[str] = None               # the run's workdir, holding config.json
  config: Optional[ml_collections.ConfigDict] = None

  @property
  def params(self) -> dict[str, Any]:
    return self.variables["params"]

  @property
  def num_arrays(self) -> int:
    return len(_leaves(self.params))

  @property
  def num_params(self) -> int:
    return int(sum(np.size(leaf) for leaf in _leaves(self.params)))

  @property
  def model_name(self) -> str:
    return self._need_config().model_name

  @functools.cached_property
  def overrides(self) -> dict[str, Any]:
    """create_model(model_name, **overrides) builds the exported model."""
    config = self._need_config()
    head = self.params.get("head", {}).get("kernel")
    if head is None:
      raise ValueError(f"{self.source} has no classification head (params/head/kernel); export a "
                       "checkpoint of a model with classes")
    overrides = {key: tuple(value) if isinstance(value, list) else value
                 for key, value in configuration.model_overrides(config).items()}
    overrides.update(num_classes=int(np.shape(head)[-1]), image_size=config.data.image_size)
    fields = {f.name for f in dataclasses.fields(type(create_model(config.model_name)))}
    overrides.update({key: value for key, value in EXPORT_FIELDS.items() if key in fields})
    return overrides

  @functools.cached_property
  def model(self) -> nn.Module:
    """The run's model for its checkpoint's classes, checked to hold exactly these variables."""
    model = create_model(self.model_name, **self.overrides)
    _check_fits(model, self.variables, self.source, self.model_name)
    return model

  @property
  def image_size(self) -> int:
    return int(self._need_config().data.image_size)

  @property
  def eval_pipeline(self) -> str:
    """The run's eval preprocessing (data.pp_eval, or the default resize and value range)."""
    config = self._need_config()
    return config.data.pp_eval or default_pp_eval(config.data.image_size)

  def _need_config(self) -> ml_collections.ConfigDict:
    if self.config is None:
      raise ValueError(
          f"{self.source} is not inside a training workdir with a {run_files.CONFIG_FILE}, which states the "
          "model's architecture; pass --workdir=DIR or a step directory DIR/checkpoints/STEP")
    return self.config


def _leaves(tree: Any) -> list[Any]:
  if isinstance(tree, dict):
    return [leaf for value in tree.values() for leaf in _leaves(value)]
  return [tree]


def _flat(tree: Any, prefix: str = "") -> dict[str, tuple[int, ...]]:
  if isinstance(tree, dict):
    return {path: shape for key, value in tree.items()
            for path, shape in _flat(value, f"{prefix}{key}/").items()}
  return {prefix[:-1]: tuple(np.shape(tree))}


def _check_fits(model: nn.Module, variables: dict, source: str, model_name: str) -> None:
  want = {path: tuple(spec.shape) for path, spec in expected_leaves(model).items()}
  got = _flat(variables)
  differing = [f"{path}: checkpoint {got.get(path)}, model {shape}"
               for path, shape in sorted(want.items()) if got.get(path) != shape]
  differing += [f"{path}: only in the checkpoint" for path in sorted(got.keys() - want.keys())]
  if differing:
    raise ValueError(f"{source} does not hold a {model_name} as the run's {run_files.CONFIG_FILE} builds it "
                     f"({len(differing)} variables differ, e.g. {'; '.join(differing[:3])})")


def load(source: str) -> Trained:
  """The newest restorable checkpoint of a workdir (or the given step directory or .npz file)."""
  variables = {"params": restore_params(source), **restore_model_state(source)}
  variables = {name: layers_layout.unstack_layers(tree) for name, tree in variables.items()}
  workdir = run_files.find_workdir(source)
  config = run_files.read_config(workdir) if workdir else None
  return Trained(os.fspath(source), variables, workdir, config)
