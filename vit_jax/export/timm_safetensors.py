"""The safetensors export: timm's state dict (names and layouts) for the families timm has, so that timm's
model of the same architecture loads it with load_state_dict(strict=True).

The names come from vit_jax.convert.to_torch, the import rules run backwards; writing needs only the
`safetensors` package (its numpy API), not torch. A hybrid with the official weight standardization
(weight_std_form='std', which timm lacks) gets its backbone kernels rewritten for timm's form
(timm_kernels.py). docs/export.md says which timm constructor options build the matching model.
"""
from typing import Any

import safetensors.numpy

from vit_jax.convert import to_torch
from vit_jax.export import files, timm_kernels
from vit_jax.export.trained import Trained
from vit_jax.models.hybrid import HybridVisionTransformer
from vit_jax.models.resnet import ResNetV2
from vit_jax.models.tnt import TransformerInTransformer
from vit_jax.models.vit import VisionTransformer

# Our families timm implements, and timm's class for each.
TIMM_CLASSES = {
    VisionTransformer: "timm.models.vision_transformer.VisionTransformer",
    HybridVisionTransformer: "timm.models.vision_transformer.VisionTransformer (HybridEmbed)",
    ResNetV2: "timm.models.resnetv2.ResNetV2",
    TransformerInTransformer: "timm.models.tnt.TNT",
}


def timm_state_dict(trained: Trained) -> dict[str, Any]:
  """The run's variables under timm's names, float32 numpy arrays in torch layouts."""
  family = type(trained.model)
  if family not in TIMM_CLASSES:
    raise ValueError(
        f"timm has no {family.__name__} ({trained.model_name}), so there are no timm names to write; "
        "export it as npz, saved_model or onnx")
  state = to_torch(trained.model_name, trained.variables, **trained.overrides)
  if _rewrites_kernels(trained.model):
    state = timm_kernels.rewrite_backbone(state, trained.model.weight_std_epsilon)
  return state


def _rewrites_kernels(model: Any) -> bool:
  return isinstance(model, HybridVisionTransformer) and model.weight_std_form == "std"


def save_safetensors(trained: Trained, path: Any) -> dict[str, Any]:
  """Writes the timm state dict to `path` (.safetensors); returns it."""
  state = timm_state_dict(trained)
  metadata = {"format": "pt", "model_name": trained.model_name,
              "timm_class": TIMM_CLASSES[type(trained.model)]}
  if _rewrites_kernels(trained.model):
    metadata["backbone_kernels"] = (
        f"rewritten for timm StdConv2dSame(eps={timm_kernels.TIMM_HYBRID_EPSILON:g}); vit_jax reads "
        f"them back with weight_std_form='sqrt_var', weight_std_epsilon="
        f"{timm_kernels.TIMM_HYBRID_EPSILON:g}")
  files.write_bytes(path, safetensors.numpy.save(state, metadata=metadata))
  return state


def timm_numerics(model: Any) -> str:
  """The timm options that compute this model's function (docs/export.md#timm), where timm's defaults
  differ from the model's numerics."""
  notes = []
  if isinstance(model, TransformerInTransformer):
    if model.gelu_approximate:
      notes.append("timm's TNT has exact GELU only: logits differ (gelu_approximate=True)")
  elif hasattr(model, "gelu_approximate"):
    notes.append(f"act_layer='{'gelu_tanh' if model.gelu_approximate else 'gelu'}'")
  if hasattr(model, "weight_std_epsilon"):
    conv = "StdConv2dSame" if isinstance(model, HybridVisionTransformer) else "StdConv2d"
    epsilon = (timm_kernels.TIMM_HYBRID_EPSILON if _rewrites_kernels(model)
               else model.weight_std_epsilon)
    notes.append(f"conv_layer={conv}(eps={epsilon:g}), "
                 f"norm_layer=GroupNormAct(eps={model.group_norm_epsilon:g})")
  if _rewrites_kernels(model):
    notes.append(f"the backbone's kernels are written for that eps: our (w - mean) / (std + "
                 f"{model.weight_std_epsilon:g}) has no timm form (docs/export.md#timm)")
  return "; ".join(notes) or "timm's defaults"


def interface(trained: Trained) -> dict[str, str]:
  """What the export holds and what timm's model then takes, for the model card."""
  size = trained.image_size
  return {"weights": f"timm state dict for {TIMM_CLASSES[type(trained.model)]}, torch layouts, float32",
          "timm_numerics": timm_numerics(trained.model),
          "input": f"timm's model takes float32 [batch, 3, {size}, {size}] (NCHW), preprocessed",
          "output": f"logits float32 [batch, {trained.overrides['num_classes']}]",
          "preprocessing": f"before the model, as the run's eval pipeline: {trained.eval_pipeline}"}
