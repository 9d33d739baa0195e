"""Published checkpoints by name, as timm's pretrained tags: `config.init_from='ViT-B/16:i21k'`.

Each name stands for one public npz file (its gs:// path) and says which model reads it: the model
name, the classifier, the resolution it was trained at and its classes. Fine-tuning at another
resolution resizes the position embeddings as for any checkpoint; the head is replaced. The facts
(paths, resolutions, classes, which files carry a representation layer) are in
docs/checkpoint_format.md#public-checkpoints. jax-free: the config checks use it before jax starts.
"""
import dataclasses
import difflib
from typing import Optional


@dataclasses.dataclass(frozen=True)
class PublicCheckpoint:
  """One published file and the model that reads it."""
  path: str
  model_name: str
  image_size: int
  num_classes: int
  classifier: str = "token"         # 'gap' for the big_vision S/16 baselines
  representation_layer: bool = False  # holds pre_logits (dropped when fine-tuning, as the paper did)
  layout: str = "vit_jax"           # 'big_vision': top-level pos_embedding, possibly a sin-cos table

  @property
  def fields(self) -> dict:
    return {"model_name": self.model_name, "classifier": self.classifier}


_VIT_MODELS = "gs://vit_models"
_I21K, _I1K = 21843, 1000
_ORIGINAL = ("ViT-B/16", "ViT-B/32", "ViT-L/16", "ViT-L/32", "ViT-H/14", "R50+ViT-B/16")
# AugReg ("How to train your ViT"): the recommended ImageNet-21k checkpoint of each model.
_AUGREG = {
    "ViT-Ti/16": "Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0",
    "ViT-S/32": "S_32-i21k-300ep-lr_0.001-aug_none-wd_0.1-do_0.0-sd_0.0",
    "ViT-S/16": "S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0",
    "ViT-B/32": "B_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0",
    "ViT-B/16": "B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0",
    "ViT-B/8": "B_8-i21k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.0-sd_0.0",
    "ViT-L/16": "L_16-i21k-300ep-lr_0.001-aug_strong1-wd_0.1-do_0.0-sd_0.0",
}


def _file_name(model_name: str) -> str:
  return model_name.replace("/", "_")  # ViT-B/16 -> ViT-B_16, R50+ViT-B/16 -> R50+ViT-B_16


def _table() -> dict[str, PublicCheckpoint]:
  table = {}
  for model in _ORIGINAL:  # the ViT paper's ImageNet-21k pre-training, zeroed 21k head
    table[f"{model}:i21k"] = PublicCheckpoint(
        f"{_VIT_MODELS}/imagenet21k/{_file_name(model)}.npz", model, 224, _I21K,
        representation_layer=True)
  for model in _ORIGINAL[:4] + _ORIGINAL[5:]:  # ...then fine-tuned on ImageNet at 384 px
    table[f"{model}:i21k+i1k"] = PublicCheckpoint(
        f"{_VIT_MODELS}/imagenet21k+imagenet2012/{_file_name(model)}.npz", model, 384, _I1K)
  for model in ("ViT-B/16", "ViT-L/16"):  # ...and at 224 px
    table[f"{model}:i21k+i1k-224"] = PublicCheckpoint(
        f"{_VIT_MODELS}/imagenet21k+imagenet2012/{_file_name(model)}-224.npz", model, 224, _I1K)
  for model, stem in _AUGREG.items():
    table[f"{model}:augreg-i21k"] = PublicCheckpoint(
        f"{_VIT_MODELS}/augreg/{stem}.npz", model, 224, _I21K)
  for epochs in (90, 150, 300):  # big_vision's plain ImageNet-1k baselines: GAP head, sin-cos table
    table[f"ViT-S/16:i1k-{epochs}ep"] = PublicCheckpoint(
        f"gs://big_vision/vit_s16_i1k_{epochs}ep.npz", "ViT-S/16", 224, _I1K, classifier="gap",
        layout="big_vision")
  return table


PUBLIC_CHECKPOINTS: dict[str, PublicCheckpoint] = _table()


def lookup(init_from: str) -> Optional[PublicCheckpoint]:
  """The public checkpoint `init_from` names, or None when it is not such a name."""
  return PUBLIC_CHECKPOINTS.get(init_from)


def check_fits(name: str, model_name: str, classifier: str) -> None:
  """Refuses a public checkpoint for another model, naming the settings that would read it."""
  entry = PUBLIC_CHECKPOINTS[name]
  if (model_name, classifier) != (entry.model_name, entry.classifier):
    raise ValueError(
        f"config.init_from={name!r} holds a {entry.model_name} with classifier={entry.classifier!r} "
        f"(trained at {entry.image_size} px); the config builds a {model_name} with classifier="
        f"{classifier!r}: set --config.model_name={entry.model_name} "
        f"--config.model.classifier={entry.classifier}")


def unknown_name_hint(init_from: str) -> str:
  """For a value that is neither a path nor a name: the closest names, or how to list them."""
  close = difflib.get_close_matches(init_from, PUBLIC_CHECKPOINTS, n=3, cutoff=0.6)
  if close:
    return f"did you mean {' or '.join(repr(c) for c in close)}?"
  return ("public checkpoint names are <model>:<tag>, e.g. 'ViT-B/16:i21k' "
          "(docs/checkpoint_format.md#public-checkpoints lists them)")


def resolve(init_from: str) -> str:
  """The path to read for `init_from`: a name's gs:// file, anything else unchanged."""
  entry = lookup(init_from)
  return entry.path if entry else init_from
