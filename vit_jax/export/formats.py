"""The export formats by name, and one export: restore, write the format, write the model card."""
import importlib

from vit_jax.export import model_card
from vit_jax.export import trained as trained_lib

# Each format: (the module that writes it, imported only when chosen; its save function).
FORMATS = {
    "npz": ("vit_jax.export.npz", "save_trained"),
    "safetensors": ("vit_jax.export.timm_safetensors", "save_safetensors"),
    "saved_model": ("vit_jax.export.saved_model", "save_saved_model"),
    "onnx": ("vit_jax.export.onnx_model", "save_onnx"),
}


def export(source: str, export_format: str, output: str) -> tuple[trained_lib.Trained, str, str]:
  """Writes `source` as `export_format` to `output` and its model card; returns (the trained model,
  the card's Markdown path, its JSON path)."""
  if export_format not in FORMATS:
    raise ValueError(f"unknown format {export_format!r}; known: {', '.join(FORMATS)}")
  module_name, save_name = FORMATS[export_format]
  module = importlib.import_module(module_name)
  trained = trained_lib.load(source)
  getattr(module, save_name)(trained, output)
  facts = model_card.card(trained, export_format, output, module.interface(trained))
  md_path, json_path = model_card.write_card(facts, output)
  return trained, md_path, json_path
