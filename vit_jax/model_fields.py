"""The fields of each model family, read from the family modules' source, so configs need no jax.

`--config.model.<field>=value` must parse before jax is imported (a config file is loaded first, on
every host). The families are flax dataclasses, so their fields are the class-level annotated
assignments of the family class and its bases; this module reads them with `ast` instead of
importing flax. tests/test_model_fields.py checks that what it reads equals dataclasses.fields.
"""
import ast
import functools
import pathlib
from typing import Optional

# The family modules under vit_jax/models, listed explicitly (the registry imports the same list).
FAMILY_MODULES = ("vit", "hybrid", "resnet", "tnt", "t2t", "lvvit")
# Fields the trainer sets from the data (class count, resolution) or flax sets itself.
SET_BY_TRAINER = frozenset({"num_classes", "image_size", "parent", "name"})
_MODELS_DIR = pathlib.Path(__file__).resolve().parent / "models"
_SCALARS = {"int": int, "float": float, "str": str, "bool": bool, "Dtype": str}


@functools.cache
def _module_tree(module: str) -> ast.Module:
  return ast.parse((_MODELS_DIR / f"{module}.py").read_text(), filename=f"{module}.py")


def _variant_table(module: str) -> tuple[Optional[str], tuple[str, ...]]:
  """(family class, variant names) of a family module: the class its `Variant(...)` calls build and
  the string keys of its VARIANTS table."""
  tree = _module_tree(module)
  family, names = None, ()
  for node in ast.walk(tree):
    if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Variant" and node.args
        and isinstance(node.args[0], ast.Name)):
      family = family or node.args[0].id
    target = node.target if isinstance(node, ast.AnnAssign) else (
        node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
    if getattr(target, "id", None) == "VARIANTS" and isinstance(node.value, ast.Dict):
      names = tuple(key.value for key in node.value.keys if isinstance(key, ast.Constant))
  return family, names


def family_of(model_name: str) -> tuple[str, str]:
  """(module, class) of the family that defines `model_name`, e.g. ('tnt', 'TransformerInTransformer')."""
  for module in FAMILY_MODULES:
    family, names = _variant_table(module)
    if model_name in names:
      return module, family
  known = sorted(name for module in FAMILY_MODULES for name in _variant_table(module)[1])
  raise ValueError(f"unknown model {model_name!r}; known models: {', '.join(known)}")


def _field_type(annotation: ast.expr) -> Optional[type]:
  """The config type of an annotation: int/float/str/bool (Optional[...] unwrapped, dtypes as str),
  tuple for tuples, None for what a command line cannot set (callables, Any)."""
  if isinstance(annotation, ast.Name):
    return _SCALARS.get(annotation.id)
  if isinstance(annotation, ast.Subscript):
    outer = getattr(annotation.value, "id", None)
    if outer == "Optional":
      return _field_type(annotation.slice)
    if outer in ("tuple", "Tuple"):
      return tuple
  return None


def _imported_from(tree: ast.Module, name: str) -> Optional[str]:
  """The vit_jax.models module a name is imported from in `tree`, if any."""
  for node in tree.body:
    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vit_jax.models."):
      if any(alias.name == name for alias in node.names):
        return node.module.rsplit(".", 1)[-1]
  return None


def _class_fields(module: str, class_name: str) -> dict[str, Optional[type]]:
  tree = _module_tree(module)
  node = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name), None)
  if node is None:
    raise ValueError(f"class {class_name} not found in vit_jax/models/{module}.py")
  fields: dict[str, Optional[type]] = {}
  for base in node.bases:
    if isinstance(base, ast.Name):
      base_module = module if any(isinstance(n, ast.ClassDef) and n.name == base.id
                                  for n in tree.body) else _imported_from(tree, base.id)
      if base_module is not None:
        fields.update(_class_fields(base_module, base.id))
  for statement in node.body:
    if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
      if getattr(statement.annotation, "id", None) != "ClassVar":
        fields[statement.target.id] = _field_type(statement.annotation)
  return fields


def family_fields(model_name: str) -> dict[str, type]:
  """The fields of `model_name`'s family that a config may set, with their types (class order)."""
  module, family = family_of(model_name)
  return {name: kind for name, kind in _class_fields(module, family).items()
          if kind is not None and name not in SET_BY_TRAINER}
