"""Config -> Setup, one way: everything the trainer derives from a config, read once, without data.

`setup(config, num_classes, train_examples)` reads every model, optimizer, mesh, sharding, loss and
step key of the config and returns a Setup: the model, the optimizer, the mesh and the shardings of
the state, the one state initialisation, the compiled train step and the compiled eval step. The
loop, the pod planner, the benchmarks and the tests all use it, so they run the trainer's own step.
Kept free of TensorFlow so that benchmarks, the planner and hosts that feed their own batches build
exactly the trainer's step without importing tf.data.
"""
import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from vit_jax import parallel
from vit_jax.configuration import model_overrides, total_steps
from vit_jax.models import create_model
from vit_jax.train import losses, optim
from vit_jax.train import masked_patch  # noqa: F401  (registers the dense loss 'masked_patch')
from vit_jax.train import token_labeling  # noqa: F401  (registers the dense loss 'token_label')
from vit_jax.train.state import TrainState
from vit_jax.train.step import make_eval_step, make_train_step


@dataclasses.dataclass
class Setup:
  """What the phases before the loop produce. Steps are jitted once here and compile on first use
  (or ahead of time through .lower(...).compile()); run them under `parallel.activate(mesh, rules)`.

  train_step(state, batch) -> (state, metrics): the state laid out as state_shardings and donated.
  eval_step(variables, batch) -> sums of top-1/top-5 hits, loss and examples (see step.py).
  predict_step(variables, batch) -> the same sums plus the batch's logits (multi-label ranking).
  """
  model: nn.Module
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  mesh: jax.sharding.Mesh
  rules: Any
  state_shardings: TrainState
  abstract_state: TrainState
  total_steps: int
  num_classes: int
  multi_label: bool
  loss_name: str
  batch_size: int
  image_size: int
  seed: int
  train_step: Callable[..., Any]
  eval_step: Callable[..., Any]
  predict_step: Callable[..., Any]
  _init: Callable[[], TrainState]

  def init_state(self) -> TrainState:
    """The initial train state from the seed, created directly in its shardings."""
    with parallel.activate(self.mesh, self.rules):
      return self._init()

  def abstract_batch(self, batch_size: int = 0) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes of one global train batch (default: the config's), sharded as the trainer shards
    batches: to compile ahead of time."""
    batch_size = batch_size or self.batch_size
    size = self.image_size
    return {"image": jax.ShapeDtypeStruct((batch_size, size, size, 3), jnp.float32,
                                          sharding=parallel.batch_sharding(self.mesh, self.rules, 4)),
            "label": jax.ShapeDtypeStruct((batch_size,), jnp.int32,
                                          sharding=parallel.batch_sharding(self.mesh, self.rules, 1))}


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


def _training_model(config: ml_collections.ConfigDict, model: nn.Module, loss_name: str,
                    loss_fn: losses.LossFn) -> tuple[nn.Module, losses.LossFn]:
  """(the model the train step applies, the loss the eval step sums): the model itself and its loss,
  or, for a dense loss, the model returning its dense outputs and softmax_xent on its plain logits."""
  if not losses.takes_dense_outputs(loss_fn):
    if config.data.get("score_maps", ""):
      raise ValueError(
          f"config.data.score_maps is set, but config.loss={loss_name!r} does not read score maps: "
          "set config.loss='token_label', or clear data.score_maps")
    return model, loss_fn
  need = losses.model_need(loss_fn)
  if not getattr(model.interface, need.flag):
    raise ValueError(
        f"config.loss={loss_name!r} trains on {need.outputs}, which {config.model_name} does not "
        f"have (ModelInterface.{need.flag}); {need.hint}")
  return model.clone(return_dense=True), losses.get_loss("softmax_xent")


def _check_batch(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> None:
  batch_shards = mesh.shape["data"] * mesh.shape["fsdp"]
  micro_batch, remainder = divmod(config.batch_size, config.train.accum_steps)
  if config.batch_size <= 0 or remainder or micro_batch % batch_shards:
    raise ValueError(
        f"batch_size {config.batch_size} / train.accum_steps {config.train.accum_steps} must be a "
        f"positive whole multiple of the {batch_shards} batch shards (mesh data x fsdp); adjust "
        "batch_size")


def _state_shardings(config, mesh, rules, tx, boxed: TrainState) -> TrainState:
  shards_params = config.sharding != "data_parallel" and mesh.shape["fsdp"] > 1
  param_shardings = parallel.param_shardings(
      boxed.params, mesh, rules, min_size=config.fsdp_min_size if shards_params else 0)
  if shards_params:
    left = parallel.replicated_above(nn.unbox(boxed.params), param_shardings,
                                     config.fsdp_check_size)
    if left:
      listing = "\n  ".join(f"{path}: {size:,} elements" for path, size in left[:20])
      raise ValueError(
          f"{config.sharding} leaves {len(left)} parameters of >= {config.fsdp_check_size:,} elements "
          f"replicated on every device:\n  {listing}\nGive them logical axis names that the rules "
          "shard, make their sharded dimension divisible by the fsdp axis, or raise fsdp_check_size.")
  replicated = parallel.replicated(mesh)
  opt_shardings = optim.map_params(
      tx, lambda _, sharding: sharding, boxed.opt_state, param_shardings,
      transform_non_params=lambda _: replicated)
  return TrainState(step=replicated, params=param_shardings, opt_state=opt_shardings,
                    rng=replicated, model_state=parallel.logical_shardings(boxed.model_state, mesh, rules))


def setup(config: ml_collections.ConfigDict, num_classes: int, train_examples: int,
          multi_label: bool = False) -> Setup:
  """Reads the config once: mesh, model, loss, optimizer, state shardings, init and compiled steps.

  num_classes sizes the head; train_examples (of config.data.train_split) converts epoch durations;
  multi_label (the data's label kind) resolves config.loss='auto'.
  """
  mesh = parallel.make_mesh(dict(config.mesh))
  rules = parallel.rules_for(config.sharding)
  _check_batch(config, mesh)
  loss_name = losses.resolve_loss_name(config.loss, multi_label)
  loss_fn = losses.bind_options(loss_name, losses.get_loss(loss_name), dict(config.loss_options))
  model = build_model(config, num_classes)
  train_model, eval_loss_fn = _training_model(config, model, loss_name, loss_fn)
  steps = total_steps(config, train_examples)
  tx, schedule = optim.make_optimizer(config.optim, steps)
  image_size = config.data.image_size
  init = init_fn(model, tx, image_size, config.seed)
  boxed = jax.eval_shape(lambda: init(boxed=True))
  shardings = _state_shardings(config, mesh, rules, tx, boxed)
  abstract = jax.tree.map(
      lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
      boxed.replace(params=nn.unbox(boxed.params), model_state=nn.unbox(boxed.model_state)),
      shardings)
  train_step = jax.jit(
      make_train_step(train_model, tx, schedule, loss_fn=loss_fn,
                      label_smoothing=config.train.label_smoothing,
                      accum_steps=config.train.accum_steps),
      in_shardings=(shardings, None), out_shardings=(shardings, None), donate_argnums=(0,))
  return Setup(
      model=model, tx=tx, schedule=schedule, mesh=mesh, rules=rules, state_shardings=shardings,
      abstract_state=abstract, total_steps=steps, num_classes=num_classes, multi_label=multi_label,
      loss_name=loss_name, batch_size=config.batch_size, image_size=image_size, seed=config.seed,
      train_step=train_step,
      eval_step=jax.jit(make_eval_step(model, eval_loss_fn)),
      predict_step=jax.jit(make_eval_step(model, eval_loss_fn, with_logits=True)),
      _init=jax.jit(lambda: init(boxed=False), out_shardings=shardings))
