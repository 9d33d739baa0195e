"""Fine-tuning load: pretrained params into a new model's init, with head reset and posemb resize.

Follows the reference vit_jax `load_pretrained`: the head is always the fresh init (zeros kernel),
pre_logits is dropped unless the new model keeps a representation layer, and every position embedding
is resized in 2D when its token count differs (or, as `init_posemb` asks, interpolated as a 1D
sequence or left at the new model's init, to measure what the 2D resize is worth). The parameters
only a pretraining objective uses (masked patch prediction's [mask] embedding and colour head) are
dropped when the new model has none, and loaded when it has them (fresh when the checkpoint has
none). Anything else that differs is an error.
"""
import dataclasses
import os
from typing import Any, Mapping, Union

import flax.linen as nn
import jax
import numpy as np

from vit_jax.checkpoint import big_vision_layout, layers_layout
from vit_jax.checkpoint import naming
from vit_jax.checkpoint.params import restore_model_state, restore_params
from vit_jax.checkpoint.posemb import resize_posemb, resize_posemb_1d

HEADS = ("head", "aux_head")  # classifiers: replaced by the new model's fresh ones (LV-ViT has two)
PRE_LOGITS = "pre_logits"
# Used only by a pretraining objective: masked patch prediction's [mask] embedding and per-patch
# colour head (models/vit.py, masked_patch_prediction=True).
PRETRAINING_ONLY = ("mask_embedding", "mpp_head")
# Position embeddings (1, tokens, dim), recognised by the last part of their path, and whether their first
# row belongs to the class token when the model has one (False: the rows are a bare square grid).
POSITION_EMBEDDINGS = {
    "pos_embedding": True,        # ViT Transformer/posembed_input/pos_embedding: [cls] + patch grid.
    "patch_pos_embedding": True,  # TNT outer table: [cls] + patch grid; changes with the image size.
    "pixel_pos_embedding": False,  # TNT inner table: the words of one patch; changes with the word grid.
}
# What happens to a position embedding whose token count changed (config.init_posemb): interpolated
# over its 2D grid (the reference), interpolated as a flat 1D sequence, or the new model's fresh init.
POSEMB_RESIZES = {"interpolate_2d": resize_posemb, "interpolate_1d": resize_posemb_1d}
INIT_POSEMB_MODES = (*POSEMB_RESIZES, "reset")
Shape = tuple[int, ...]


@dataclasses.dataclass
class LoadReport:
  """What load_pretrained did with each parameter, for the log."""
  source: str
  loaded: list[str] = dataclasses.field(default_factory=list)
  resized: list[tuple[str, Shape, Shape]] = dataclasses.field(default_factory=list)
  reset: list[str] = dataclasses.field(default_factory=list)
  ignored: list[str] = dataclasses.field(default_factory=list)
  how: dict[str, str] = dataclasses.field(default_factory=dict)  # key -> how it was resized or reset

  def _how(self, key: str) -> str:
    return f"  ({self.how[key]})" if key in self.how else ""

  def format(self, *, list_loaded: bool = True) -> str:
    """A key-by-key text: one line per parameter, grouped by what happened to it.

    With list_loaded=False the (usually long and unsurprising) loaded keys are only counted.
    """
    lines = [f"Pretrained params from {self.source}: {len(self.loaded)} loaded, "
             f"{len(self.resized)} resized, {len(self.reset)} reset to init, "
             f"{len(self.ignored)} ignored."]
    if list_loaded:
      lines += [f"  loaded   {key}" for key in self.loaded]
    lines += [f"  resized  {key}  {old} -> {new}{self._how(key)}" for key, old, new in self.resized]
    lines += [f"  reset    {key}  (fresh init{': ' + self.how[key] if key in self.how else ''})"
              for key in self.reset]
    lines += [f"  ignored  {key}  (not in the new model)" for key in self.ignored]
    return "\n".join(lines)


def _top(key: str) -> str:
  return key.split("/", 1)[0]


def _mismatch_error(source: str, mismatches: list[tuple[str, Any, Any]]) -> ValueError:
  # Shape mismatches first: they say most about the architecture.
  mismatches = sorted(mismatches, key=lambda m: (isinstance(m[1], str) or isinstance(m[2], str)))
  shown = "\n".join(f"  {key}: checkpoint {old}, model {new}" for key, old, new in mismatches[:8])
  more = f"\n  ... and {len(mismatches) - 8} more" if len(mismatches) > 8 else ""
  return ValueError(
      f"checkpoint {source} does not fit the model: {len(mismatches)} parameter(s) differ beyond the "
      f"head and position embedding:\n{shown}{more}\nIt was probably trained with another "
      "architecture (hidden size, depth, heads, patch size, classifier); create the model with the "
      "checkpoint's architecture.")


def _is_float(dtype: Any) -> bool:
  return jax.numpy.issubdtype(dtype, jax.numpy.inexact)  # Knows bfloat16, unlike numpy.


def _integer_weights_error(source: str, wrong: list[tuple[str, Any, Any]]) -> ValueError:
  shown = "\n".join(f"  {key}: stored as {old}, the model's is {new}" for key, old, new in wrong[:8])
  more = f"\n  ... and {len(wrong) - 8} more" if len(wrong) > 8 else ""
  return ValueError(
      f"checkpoint {source} stores {len(wrong)} floating-point parameter(s) as integers:\n{shown}{more}\n"
      "They are not cast silently: the file was written wrongly (rounded or truncated weights) or is "
      "not a weights file. Export it again with float arrays.")


def _resize_how(init_posemb: str, old_rows: int, new_rows: int) -> str:
  if init_posemb == "interpolate_2d":
    old, new = int(np.sqrt(old_rows)), int(np.sqrt(new_rows))
    return f"interpolate_2d: the {old}x{old} grid bilinearly to {new}x{new}"
  return f"interpolate_1d: {old_rows} rows linearly to {new_rows}, as one sequence, grid ignored"


def load_pretrained(init_params: Mapping[str, Any], source_path: Union[str, os.PathLike, Mapping],
                    *, has_class_token: bool, keep_pre_logits: bool,
                    init_posemb: str = "interpolate_2d") -> tuple[dict, LoadReport]:
  """Merges pretrained params into `init_params` for fine-tuning; returns (numpy params, report).

  Args:
    init_params: the new model's freshly initialized params (concrete values; flax logical boxes are
      unboxed here, but callers should pass `nn.unbox(variables['params'])`).
    source_path: a training workdir, Orbax step dir or .npz file (see restore_params), or an
      already-loaded params dict.
    has_class_token: whether the new model has a class token (config classifier == 'token'); it
      applies to the position embeddings that carry a class-token row (see POSITION_EMBEDDINGS).
    keep_pre_logits: keep the pretrained representation layer; requires the new model to have one.
    init_posemb: what a position embedding whose token count changed becomes (INIT_POSEMB_MODES):
      'interpolate_2d' (its grid resized, the reference), 'interpolate_1d' (its patch rows
      interpolated as one sequence) or 'reset' (the new model's fresh init). The class-token row
      is kept by both interpolations. big_vision's fixed sin-cos table is computed for the new grid
      whatever the mode.
  """
  if init_posemb not in INIT_POSEMB_MODES:
    raise ValueError(f"init_posemb={init_posemb!r} is not one of {', '.join(INIT_POSEMB_MODES)}")
  # Compared in the unrolled layout; returned in the layout (scanned or not) of init_params.
  init = naming.flatten(layers_layout.unstack_layers(nn.meta.unbox(init_params)))
  if isinstance(source_path, Mapping):
    source, raw = "<params dict>", source_path
  else:
    source, raw = os.fspath(source_path), restore_params(source_path)
  pretrained = naming.flatten(layers_layout.unstack_layers(raw))
  # A big_vision ViT with posemb='sincos2d' stores no table: it is computed for the new grid.
  sincos_key = "/".join(big_vision_layout.OUR_POSEMB) if big_vision_layout.uses_sincos_table(
      raw) else None
  has_pre_logits = any(_top(key) == PRE_LOGITS for key in init)
  if keep_pre_logits and not has_pre_logits:
    raise ValueError("keep_pre_logits=True but the new model has no pre_logits layer; set "
                     "representation_size in the model config or pass keep_pre_logits=False")
  report, params, mismatches, integer_weights = LoadReport(source), {}, [], []
  for key, fresh in init.items():
    fresh = np.asarray(fresh)
    top = _top(key)
    reset = top in HEADS or (top == PRE_LOGITS and (not keep_pre_logits or key not in pretrained)) or (
        top in PRETRAINING_ONLY and key not in pretrained)
    if reset:
      params[key] = fresh
      report.reset.append(key)
      continue
    if key not in pretrained and key == sincos_key:
      params[key] = big_vision_layout.sincos_table(
          int(np.sqrt(fresh.shape[1] - has_class_token)), fresh.shape[2], has_class_token, fresh.dtype)
      report.resized.append((key, "big_vision's fixed 2D sin-cos table", fresh.shape))
      continue
    if key not in pretrained:
      mismatches.append((key, "missing", fresh.shape))
      continue
    value = np.asarray(pretrained[key])
    if _is_float(fresh.dtype) and not _is_float(value.dtype):
      integer_weights.append((key, value.dtype, fresh.dtype))
      continue
    class_token_row = POSITION_EMBEDDINGS.get(key.rsplit("/", 1)[-1])
    if (class_token_row is not None and value.shape != fresh.shape
        and value.shape[-1] == fresh.shape[-1]):
      extra = int(has_class_token and class_token_row)
      if init_posemb == "reset":
        params[key] = fresh
        report.reset.append(key)
        report.how[key] = f"init_posemb='reset', the checkpoint's {value.shape} not used"
        continue
      old_shape = value.shape
      try:
        value = POSEMB_RESIZES[init_posemb](value, fresh.shape[1], bool(extra))
      except ValueError as e:
        raise ValueError(f"cannot resize {key} from {source}: {e}") from e
      report.resized.append((key, old_shape, value.shape))
      report.how[key] = _resize_how(init_posemb, old_shape[1] - extra, value.shape[1] - extra)
    elif value.shape != fresh.shape:
      mismatches.append((key, value.shape, fresh.shape))
      continue
    else:
      report.loaded.append(key)
    params[key] = value.astype(fresh.dtype, copy=False)
  for key in pretrained:
    if key not in init:
      if _top(key) in HEADS + (PRE_LOGITS,) + PRETRAINING_ONLY:
        report.ignored.append(key)
      else:
        mismatches.append((key, np.shape(pretrained[key]), "has no such parameter"))
  if integer_weights:
    raise _integer_weights_error(source, integer_weights)
  if mismatches:
    raise _mismatch_error(source, mismatches)
  return layers_layout.like(naming.unflatten(params), nn.meta.unbox(init_params)), report


def load_pretrained_model_state(fresh: Mapping[str, Any], source_path: Union[str, os.PathLike]
                                ) -> tuple[dict, list[str]]:
  """The non-parameter collections of a fine-tuned model (BatchNorm statistics, fixed tables such as
  T2T's performer features) taken from the pretrained run where they fit; returns (state, report).

  A collection the source lacks (an .npz holds parameters only) or whose shapes changed keeps its
  fresh value, and the report says so.
  """
  if not fresh:
    return dict(fresh), []
  saved = restore_model_state(source_path)
  merged, lines = {}, []
  for collection, value in fresh.items():
    old = saved.get(collection)
    fits = old is not None and jax.tree.structure(old) == jax.tree.structure(value) and all(
        np.shape(a) == np.shape(b) for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(value)))
    merged[collection] = old if fits else value
    lines.append(f"  loaded   model state '{collection}'" if fits else
                 f"  fresh    model state '{collection}' (absent from the checkpoint or reshaped): "
                 "kept at its initial value")
  return merged, lines
