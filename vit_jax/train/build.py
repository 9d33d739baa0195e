"""The trainer's phases that need no data: mesh, model, optimizer and the shardings of the state.

Kept apart from the loop (which reads data through TensorFlow) so that benchmarks, the pod planner
and hosts that feed their own batches build exactly the trainer's step without importing tf.data.
"""
import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from vit_jax import parallel
from vit_jax.configuration import model_overrides, total_steps
from vit_jax.models import create_model
from vit_jax.train.optim import make_optimizer
from vit_jax.train.state import TrainState
from vit_jax.train.step import make_train_step


@dataclasses.dataclass
class Setup:
  """What the phases before the loop produce: model, optimizer, mesh, shardings and compiled steps."""
  model: nn.Module
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  mesh: jax.sharding.Mesh
  rules: Any
  state_shardings: TrainState
  abstract_state: TrainState
  total_steps: int
  num_classes: int


def build_model(config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
  return create_model(config.model_name, num_classes=num_classes,
                      image_size=config.data.image_size, **model_overrides(config))


def init_fn(model: nn.Module, tx: optax.GradientTransformation, image_size: int, seed: int):
  """Returns a function that initialises the full (boxed) train state from nothing but the seed."""
  def init(boxed: bool) -> TrainState:
    init_rng, train_rng = jax.random.split(jax.random.key(seed))
    dummy = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    variables = dict(model.init({"params": init_rng}, dummy, train=False))
    params = variables.pop("params")
    unboxed = nn.unbox(params)
    opt_state = tx.init(unboxed)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params if boxed else unboxed,
                      opt_state=opt_state, rng=jax.random.key_data(train_rng),
                      model_state=variables if boxed else nn.unbox(variables))
  return init


def setup(config: ml_collections.ConfigDict, num_classes: int, train_examples: int) -> Setup:
  """Phases 1-3: mesh, model, optimizer, and the shardings of every leaf of the state.

  num_classes sizes the head; train_examples (of config.data.train_split) converts epoch durations.
  """
  mesh = parallel.make_mesh(dict(config.mesh))
  rules = parallel.rules_for(config.sharding)
  batch_shards = mesh.shape["data"] * mesh.shape["fsdp"]
  micro_batch, remainder = divmod(config.batch_size, config.train.accum_steps)
  if remainder or micro_batch % batch_shards:
    raise ValueError(
        f"batch_size {config.batch_size} / train.accum_steps {config.train.accum_steps} must be a "
        f"whole multiple of the {batch_shards} batch shards (mesh data x fsdp); adjust batch_size")
  model = build_model(config, num_classes)
  steps = total_steps(config, train_examples)
  tx, schedule = make_optimizer(config.optim, steps)
  init = init_fn(model, tx, config.data.image_size, config.seed)
  boxed = jax.eval_shape(lambda: init(boxed=True))
  shards_params = config.sharding != "data_parallel" and mesh.shape["fsdp"] > 1
  param_shardings = parallel.param_shardings(
      boxed.params, mesh, rules, min_size=config.fsdp_min_size if shards_params else 0)
  abstract_params = nn.unbox(boxed.params)
  if shards_params:
    left = parallel.replicated_above(abstract_params, param_shardings, config.fsdp_check_size)
    if left:
      listing = "\n  ".join(f"{path}: {size:,} elements" for path, size in left[:20])
      raise ValueError(
          f"{config.sharding} leaves {len(left)} parameters of >= {config.fsdp_check_size:,} elements "
          f"replicated on every device:\n  {listing}\nGive them logical axis names that the rules "
          "shard, make their sharded dimension divisible by the fsdp axis, or raise fsdp_check_size.")
  opt_shardings = optax.tree_map_params(
      tx, lambda _, sharding: sharding, boxed.opt_state, param_shardings,
      transform_non_params=lambda _: parallel.replicated(mesh))
  replicated = parallel.replicated(mesh)
  shardings = TrainState(step=replicated, params=param_shardings, opt_state=opt_shardings,
                         rng=replicated,
                         model_state=parallel.logical_shardings(boxed.model_state, mesh, rules))
  abstract = jax.tree.map(
      lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
      boxed.replace(params=abstract_params, model_state=nn.unbox(boxed.model_state)), shardings)
  return Setup(model, tx, schedule, mesh, rules, shardings, abstract, steps, num_classes)


def jit_train_step(s: Setup, **step_options):
  """The train step as the trainer runs it: state laid out as `s` says and donated, the batch as it
  comes; `step_options` go to make_train_step (label_smoothing, accum_steps, multi_label)."""
  return jax.jit(make_train_step(s.model, s.tx, s.schedule, **step_options),
                 in_shardings=(s.state_shardings, None), out_shardings=(s.state_shardings, None),
                 donate_argnums=(0,))


def abstract_batch(s: Setup, batch_size: int, image_size: int) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes of one global batch, sharded as the trainer shards batches: to compile ahead of time."""
  return {"image": jax.ShapeDtypeStruct((batch_size, image_size, image_size, 3), jnp.float32,
                                        sharding=parallel.batch_sharding(s.mesh, s.rules, 4)),
          "label": jax.ShapeDtypeStruct((batch_size,), jnp.int32,
                                        sharding=parallel.batch_sharding(s.mesh, s.rules, 1))}
