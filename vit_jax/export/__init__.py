"""Exports for downstream teams: one module per format, each writing a model card beside its file.

  npz.py               params in the public vit_jax npz format (pre-Linen names)
  timm_safetensors.py  timm's state dict (names, layouts) for ViT, hybrids, BiT and TNT
  saved_model.py       TF SavedModel (jax2tf): uint8 images of any size in, logits out
  onnx_model.py        ONNX (jax2onnx): preprocessed float32 images in, logits out
  model_card.py        the card (Markdown and JSON): model, size, FLOPs, input, classes, training,
                       evaluation, code commit
  trained.py           a checkpoint and its run's config, as the exporters read them
  files.py             files written whole
CLI: python -m vit_jax.export --workdir=DIR --format=FORMAT --output=PATH (__main__.py).
"""
from vit_jax.export.npz import export_npz, save_npz

__all__ = ["export_npz", "save_npz"]
