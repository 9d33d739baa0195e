"""Pipelines written as strings, so a config or a sweep can state and vary them in one line.

    decode|inception_crop(224)|flip_lr|randaug(2, 15)|value_range(-1, 1)|onehot(smoothing=0.1)

Each `|`-separated item is an op name, optionally called with Python literals. Example ops map an
example dict to an example dict ('image', 'label' or 'labels' in, 'image' and 'label' out); the
random ones each get their own stateless seed, split from the one seed of the example, so the output
is a pure function of (example, seed). Batch ops (mixup, cutmix, mixup_or_cutmix, and whole-batch
inception_crop, flip_lr and value_range for equal-size in-memory images) map a batch dict and a
seed.
Register a new op with `@register_op(name)` / `@register_batch_op(name)` on a factory that takes the
op's arguments and returns the function.
"""
import ast
import dataclasses
import inspect
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import tensorflow as tf

from vit_jax.data import batch_augment, geometry, mixing, preprocess, randaugment

Example = Dict[str, tf.Tensor]


@dataclasses.dataclass(frozen=True)
class _Registered:
  factory: Callable[..., Callable]
  random: bool
  decodes: bool
  mixes_images: bool = False


_OPS: Dict[str, _Registered] = {}
_BATCH_OPS: Dict[str, _Registered] = {}


def register_op(name: str, *, random: bool = False, decodes: bool = False):
  """Registers factory(*args) -> fn(example, seed) -> example under `name`.

  `random` ops receive a shape-[2] seed (others None); `decodes` marks the ops that turn encoded
  bytes into pixels, whose failures the pipeline treats as unreadable data (skipped and counted).
  """
  def wrap(factory):
    _OPS[name] = _Registered(factory, random, decodes)
    return factory
  return wrap


def register_batch_op(name: str, *, mixes_images: bool = False):
  """Registers factory(*args) -> fn(batch, seed, rows) -> batch under `name` (always seeded; rows =
  (first row, global batch size) places the batch in the global batch, or None). `mixes_images`
  marks ops whose images blend two examples, which per-example targets such as score maps cannot
  follow."""
  def wrap(factory):
    _BATCH_OPS[name] = _Registered(factory, True, False, mixes_images)
    return factory
  return wrap


def mixing_batch_ops(spec: str) -> List[str]:
  """The ops of batch pipeline `spec` that mix images of two examples, in order: ['cutmix'] etc."""
  return [name for name, _, _ in parse(spec)
          if name in _BATCH_OPS and _BATCH_OPS[name].mixes_images]


def parse(spec: str) -> List[Tuple[str, tuple, dict]]:
  """'a|b(1, x=2)' -> [('a', (), {}), ('b', (1,), {'x': 2})]; arguments must be Python literals."""
  items = []
  for item in (part.strip() for part in spec.split("|")):
    if not item:
      continue
    try:
      node = ast.parse(item, mode="eval").body
      if isinstance(node, ast.Name):
        items.append((node.id, (), {}))
        continue
      if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        raise ValueError("not a name or a call")
      args = tuple(ast.literal_eval(a) for a in node.args)
      kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
    except (SyntaxError, ValueError) as e:
      raise ValueError(f"Cannot parse {item!r} in pipeline {spec!r} ({e}): write ops as "
                       "name or name(literal, ..., key=literal), joined by '|'.") from None
    items.append((node.func.id, args, kwargs))
  return items


@dataclasses.dataclass(frozen=True)
class Op:
  name: str
  fn: Callable
  random: bool
  decodes: bool


def _instantiate(spec: str, registry: Dict[str, _Registered], what: str,
                 context: Dict[str, Any]) -> List[Op]:
  ops = []
  for name, args, kwargs in parse(spec):
    if name not in registry:
      raise ValueError(f"Unknown {what} {name!r} in {spec!r}; known: {', '.join(sorted(registry))}.")
    reg = registry[name]
    params = inspect.signature(reg.factory).parameters
    bound_names = set(list(params)[:len(args)]) | set(kwargs)
    # Context values (e.g. the source's num_classes) fill parameters the string leaves out.
    extra = {k: v for k, v in context.items() if k in params and k not in bound_names}
    try:
      fn = reg.factory(*args, **kwargs, **extra)
    except TypeError as e:
      raise ValueError(f"Bad arguments for {what} {name!r} in {spec!r}: {e}. "
                       f"Its signature is {name}{inspect.signature(reg.factory)}.") from None
    ops.append(Op(name, fn, reg.random, reg.decodes))
  return ops


class Preprocess:
  """A parsed example pipeline: call it as fn(example, seed); split it at its last decoding op."""

  def __init__(self, ops: Sequence[Op], spec: str):
    self.ops = list(ops)
    self.spec = spec
    self.num_random = sum(op.random for op in self.ops)
    decoding = [i for i, op in enumerate(self.ops) if op.decodes]
    self.num_decoding_ops = decoding[-1] + 1 if decoding else 0

  def _run(self, ops_range: range, example: Example, seed) -> Example:
    seeds = None
    if self.num_random:
      if seed is None:
        raise ValueError(f"Pipeline {self.spec!r} has random ops and needs a seed.")
      seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), self.num_random)
    for i in ops_range:
      op = self.ops[i]
      op_seed = None
      if op.random:
        op_seed = seeds[sum(o.random for o in self.ops[:i])]
      example = op.fn(dict(example), op_seed)
    return example

  def __call__(self, example: Example, seed=None) -> Example:
    return self._run(range(len(self.ops)), example, seed)

  def decoding_part(self, example: Example, seed=None) -> Example:
    """The ops up to and including the last decoding op (the ones a bad file can make fail)."""
    return self._run(range(self.num_decoding_ops), example, seed)

  def rest(self, example: Example, seed=None) -> Example:
    """The ops after the last decoding op."""
    return self._run(range(self.num_decoding_ops, len(self.ops)), example, seed)


def build(spec: str, **context) -> Preprocess:
  """Parses an example pipeline; `context` (e.g. num_classes=...) fills arguments left out."""
  return Preprocess(_instantiate(spec, _OPS, "op", context), spec)


def build_batch(spec: str, **context) -> Callable[..., Example]:
  """Parses a batch pipeline (e.g. 'mixup(0.2)'); returns fn(batch, seed, rows=None) -> batch, where
  rows = (first row, global batch size) says which rows of the global batch `batch` holds."""
  ops = _instantiate(spec, _BATCH_OPS, "batch op", context)

  def apply(batch, seed, rows=None):
    if not ops:
      return batch
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), len(ops))
    for i, op in enumerate(ops):
      batch = op.fn(dict(batch), seeds[i], rows)
    return batch
  return apply


def _on(key: str, fn: Callable[..., tf.Tensor], *, out: Optional[str] = None, seeded=False):
  """Wraps an op on one tensor as an op on the example dict (reads `key`, writes `out` or `key`)."""
  def op(example, seed):
    value = fn(example[key], seed=seed) if seeded else fn(example[key])
    return {**example, (out or key): value}
  return op


# ----------------------------------------------------------------------------- image ops

@register_op("decode", decodes=True)
def _decode(key="image"):
  return _on(key, preprocess.decode)


@register_op("decode_jpeg_and_inception_crop", random=True, decodes=True)
def _decode_jpeg_and_inception_crop(size, area_min=preprocess.AREA_RANGE[0],
                                    area_max=preprocess.AREA_RANGE[1],
                                    aspect_min=preprocess.ASPECT_RANGE[0],
                                    aspect_max=preprocess.ASPECT_RANGE[1], key="image"):
  def op(example, seed):
    image, begin, crop_size, shape = preprocess.decode_jpeg_and_inception_crop_box(
        example[key], size, (area_min, area_max), (aspect_min, aspect_max), seed=seed)
    return geometry.cropped({**example, key: image}, begin[0], begin[1], crop_size[0],
                            crop_size[1], shape[0], shape[1])
  return op


@register_op("inception_crop", random=True)
def _inception_crop(size, area_min=preprocess.AREA_RANGE[0], area_max=preprocess.AREA_RANGE[1],
                    aspect_min=preprocess.ASPECT_RANGE[0], aspect_max=preprocess.ASPECT_RANGE[1],
                    key="image"):
  def op(example, seed):
    image = example[key]
    shape = tf.shape(image)
    begin, crop_size = preprocess.inception_crop_box(shape, (area_min, area_max),
                                                     (aspect_min, aspect_max), seed=seed)
    out = {**example, key: preprocess.crop_and_resize(image, begin, crop_size, size)}
    return geometry.cropped(out, begin[0], begin[1], crop_size[0], crop_size[1], shape[0], shape[1])
  return op


@register_op("resize")
def _resize(size, key="image"):
  return _on(key, lambda x: preprocess.resize(x, size))


@register_op("resize_small")
def _resize_small(size, key="image"):
  return _on(key, lambda x: preprocess.resize_small(x, size))


@register_op("central_crop")
def _central_crop(size, key="image"):
  def op(example, seed):
    del seed
    shape = tf.shape(example[key])
    out = {**example, key: preprocess.central_crop(example[key], size)}
    return geometry.cropped(out, (shape[0] - size) // 2, (shape[1] - size) // 2, size, size,
                            shape[0], shape[1])
  return op


@register_op("flip_lr", random=True)
def _flip_lr(key="image"):
  def op(example, seed):
    mirrored = preprocess.flip_lr_decision(seed)
    image = example[key]
    image = tf.cond(mirrored, lambda: tf.reverse(image, [1]), lambda: image)
    return geometry.flipped({**example, key: image}, mirrored)
  return op


@register_op("randaug", random=True)
def _randaug(num_layers=2, magnitude=10, key="image"):
  def op(example, seed):
    image = example[key]
    out = {**example, key: randaugment.randaugment(image, num_layers, magnitude, seed=seed)}
    if not geometry.tracked(example):
      return out
    return geometry.warped(out, randaugment.warp(tf.shape(image), num_layers, magnitude, seed=seed))
  return op


@register_op("value_range")
def _value_range(vmin=-1.0, vmax=1.0, in_min=0.0, in_max=255.0, key="image"):
  return _on(key, lambda x: preprocess.value_range(x, vmin, vmax, in_min, in_max))


# ----------------------------------------------------------------------------- label ops

@register_op("onehot")
def _onehot(num_classes, smoothing=0.0, key="label"):
  return _on(key, lambda y: preprocess.onehot(y, num_classes, smoothing), out="label")


@register_op("multi_hot")
def _multi_hot(num_classes, smoothing=0.0, key="labels"):
  def op(example, seed):
    del seed
    example = dict(example)
    labels = example.pop(key)
    return {**example, "label": preprocess.multi_hot(labels, num_classes, smoothing)}
  return op


# ----------------------------------------------------------------------------- batch ops

@register_batch_op("mixup", mixes_images=True)
def _mixup(alpha=0.2):
  return lambda batch, seed, rows: mixing.mixup(batch, alpha, seed=seed)


@register_batch_op("cutmix", mixes_images=True)
def _cutmix(alpha=1.0):
  return lambda batch, seed, rows: mixing.cutmix(batch, alpha, seed=seed)


@register_batch_op("mixup_or_cutmix", mixes_images=True)
def _mixup_or_cutmix(mixup_alpha, cutmix_alpha, switch_prob=0.5):
  mixing.check_mixup_or_cutmix(mixup_alpha, cutmix_alpha, switch_prob)  # When the string is read.
  return lambda batch, seed, rows: mixing.mixup_or_cutmix(
      batch, mixup_alpha, cutmix_alpha, switch_prob, seed=seed)


# Whole-batch versions of example ops, for equal-size in-memory images (see batch_augment.py).

@register_batch_op("inception_crop")
def _batch_inception_crop(size, area_min=preprocess.AREA_RANGE[0], area_max=preprocess.AREA_RANGE[1],
                          aspect_min=preprocess.ASPECT_RANGE[0],
                          aspect_max=preprocess.ASPECT_RANGE[1]):
  def op(batch, seed, rows):
    images = batch["image"]
    box = batch_augment.inception_crop_boxes(images, (area_min, area_max), (aspect_min, aspect_max),
                                             seed=seed, rows=rows)
    shape = tf.shape(images)
    out = {**batch, "image": batch_augment.crop_and_resize(images, box, size)}
    return geometry.cropped(out, *box, shape[1], shape[2])
  return op


@register_batch_op("flip_lr")
def _batch_flip_lr():
  def op(batch, seed, rows):
    mirrored = batch_augment.flip_decisions(batch["image"], seed=seed, rows=rows)
    out = {**batch, "image": batch_augment.mirror(batch["image"], mirrored)}
    return geometry.flipped(out, mirrored)
  return op


@register_batch_op("value_range")
def _batch_value_range(vmin=-1.0, vmax=1.0, in_min=0.0, in_max=255.0):
  return lambda batch, seed, rows: {**batch, "image": preprocess.value_range(
      batch["image"], vmin, vmax, in_min, in_max)}
