"""A trained model as a teacher: the config's model with a checkpoint's variables, checked to fit.

Commands that run a finished model over data (python -m vit_jax.pseudo_labels) name it by a training
workdir, an Orbax step directory or a public .npz, and its architecture by a config. A checkpoint of
another architecture, image size or class count is refused naming the parameters that differ, before
anything is computed.
"""
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vit_jax.checkpoint import restore_model_state, restore_params
from vit_jax.train.build import build_model


def load(config: ml_collections.ConfigDict, num_classes: int, path: str, *,
         role: str = "teacher") -> tuple[nn.Module, dict]:
  """(the config's model for `num_classes`, the checkpoint's variables: params and model state);
  `role` names the checkpoint in the error (the teacher, the checkpoint)."""
  model = build_model(config, num_classes)
  variables = {"params": restore_params(path), **restore_model_state(path)}
  check_fits(model, variables["params"], config.data.image_size, path, config.model_name, role=role)
  return model, variables


def check_fits(model: nn.Module, params: Any, image_size: int, path: str, model_name: str, *,
               role: str = "teacher") -> None:
  """The checkpoint's parameters must be the model's, head included (its classes are scored)."""
  expected = nn.unbox(jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, image_size, image_size, 3)))))["params"]
  want = {jax.tree_util.keystr(p): leaf.shape
          for p, leaf in jax.tree_util.tree_leaves_with_path(expected)}
  got = {jax.tree_util.keystr(p): np.shape(leaf)
         for p, leaf in jax.tree_util.tree_leaves_with_path(params)}
  differing = [f"{path_}: {role} {got.get(path_)}, {model_name} {shape}"
               for path_, shape in want.items() if got.get(path_) != shape]
  differing += [f"{path_}: only in the {role}" for path_ in got if path_ not in want]
  if differing:
    raise ValueError(f"the {role} {path} is not a {model_name} for {image_size} px images with "
                     f"this data's classes ({len(differing)} parameters differ, e.g. "
                     f"{'; '.join(differing[:3])}); set --config.model_name, --config.model.* and "
                     f"--config.data.image_size to the {role}'s")


@functools.partial(jax.jit, static_argnums=0)
def class_probabilities(model: nn.Module, variables: dict, images: jax.Array) -> jax.Array:
  """softmax of the model's logits, without noise (train=False: no dropout, no stochastic depth);
  compiled once per model and batch shape."""
  logits = model.apply(variables, images, train=False)
  return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
