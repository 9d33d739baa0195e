"""The model card every export writes beside itself, as JSON (for tools) and Markdown (for people).

It says what a downstream team needs without reading this code: the model and its config, parameter
count, FLOPs per image, input resolution and preprocessing, class names, training data and steps,
the latest evaluation metrics of the run and the commit of the code that exported it.
"""
import dataclasses
import datetime
import json
import os
import subprocess
from typing import Any, Optional

from etils import epath
import jax.numpy as jnp

from vit_jax import flops
from vit_jax import run_files
from vit_jax.export import files
from vit_jax.export.trained import Trained

METRICS_FILE = "metrics.jsonl"


def card_paths(output: str) -> tuple[str, str]:
  """(Markdown, JSON) paths beside an export: PATH.model_card.md and PATH.model_card.json, so that
  exports of one run in several formats (vit.npz, vit.onnx) keep one card each."""
  base = os.fspath(output).rstrip("/")
  return f"{base}.model_card.md", f"{base}.model_card.json"


def code_commit() -> dict[str, Any]:
  """The git commit of this package's source, and whether tracked files differ from it."""
  source = os.path.dirname(os.path.abspath(__file__))

  def git(*args: str) -> Optional[str]:
    try:
      result = subprocess.run(["git", "-C", source, *args], capture_output=True, text=True,
                              timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
      return None
    return result.stdout.strip()

  commit = git("rev-parse", "HEAD")
  if not commit:
    return {"commit": "unknown", "uncommitted_changes": None}
  return {"commit": commit, "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no"))}


def latest_evaluation(workdir: str, eval_names: list[str]) -> Optional[dict[str, Any]]:
  """The last row of the run's metrics.jsonl written by an evaluator (keys '<eval name>_...')."""
  path = epath.Path(workdir) / METRICS_FILE
  if not path.exists():
    return None
  latest = None
  for line in path.read_text().splitlines():
    try:
      row = json.loads(line)
    except json.JSONDecodeError:
      continue  # a line cut short by a kill
    if any(key.startswith(f"{name}_") for key in row for name in eval_names):
      latest = row
  return latest


def _last_step(workdir: str) -> Optional[int]:
  path = epath.Path(workdir) / METRICS_FILE
  steps = []
  if path.exists():
    for line in path.read_text().splitlines():
      try:
        steps.append(int(json.loads(line)["step"]))
      except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        continue
  return max(steps, default=None)


def _json_value(value: Any) -> Any:
  if isinstance(value, (str, int, float, bool)) or value is None:
    return value
  if isinstance(value, (list, tuple)):
    return [_json_value(v) for v in value]
  if isinstance(value, dict):
    return {str(k): _json_value(v) for k, v in value.items()}
  try:
    return jnp.dtype(value).name
  except TypeError:
    return repr(value)


def model_fields(model: Any) -> dict[str, Any]:
  """The model's architecture fields as JSON values."""
  return {f.name: _json_value(getattr(model, f.name)) for f in dataclasses.fields(model)
          if f.name not in ("parent", "name")}


def card(trained: Trained, export_format: str, output: str,
         interface: dict[str, str]) -> dict[str, Any]:
  """The card's facts as a JSON-ready dict; sections a checkpoint without a run's config cannot
  know (a bare .npz) are null."""
  facts: dict[str, Any] = {
      "export": {"format": export_format, "path": os.fspath(output), "source": trained.source,
                 "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 **interface},
      "code": code_commit(),
      "parameters": trained.num_params,
      "model": None, "flops_per_image": None, "input": None, "classes": None, "training": None,
      "evaluation": None,
  }
  if trained.config is None:
    return facts
  config, model = trained.config, trained.model
  num_classes = trained.overrides["num_classes"]
  names, names_from = run_files.class_names_of(trained.source, num_classes)
  eval_names = list(config.get("evals", {}).keys())
  train = config.train
  facts.update(
      model={"name": trained.model_name, "family": type(model).__name__,
             "fields": model_fields(model), "run_config": json.loads(config.to_json_best_effort())},
      flops_per_image=float(flops.forward_flops_per_example(model)),
      input={"image_size": trained.image_size, "layout": "RGB", "eval_pipeline": trained.eval_pipeline},
      classes={"count": num_classes, "names": names, "names_from": names_from},
      training={"data": {key: config.data.get(key) for key in ("source", "name", "root", "train_split")},
                "batch_size": config.get("batch_size"),
                "durations": {key: train.get(key) for key in ("steps", "epochs", "examples")
                              if train.get(key)},
                "last_logged_step": _last_step(trained.workdir),
                "init_from": config.get("init_from") or None,
                "workdir": trained.workdir},
      evaluation=latest_evaluation(trained.workdir, eval_names))
  return facts


def _cell(value: Any) -> str:
  """A Markdown table cell: pipes (the pipelines' separator) escaped."""
  return str(value).replace("|", "\\|")


def markdown(facts: dict[str, Any]) -> str:
  """The card for people: the same facts as the JSON, the run's full config left to the JSON."""
  export, code = facts["export"], facts["code"]
  model = facts["model"] or {}
  lines = [f"# Model card: {model.get('name', 'vit_jax export')} ({export['format']})", ""]
  rows = [("Model", f"{model.get('name', 'unknown')} ({model.get('family', 'unknown')})"),
          ("Parameters", f"{facts['parameters']:,}")]
  if facts["flops_per_image"] is not None:
    rows.append(("FLOPs per image (forward)", f"{facts['flops_per_image']:,.0f}"))
  if facts["input"]:
    size = facts["input"]["image_size"]
    rows.append(("Input resolution", f"{size} x {size} RGB"))
    rows.append(("Preprocessing (eval pipeline)", f"`{facts['input']['eval_pipeline']}`"))
  rows += [(key.capitalize().replace("_", " "), value) for key, value in export.items()
           if key in ("input", "output", "weights", "timm_numerics", "signature", "preprocessing")]
  rows.append(("Code commit", code["commit"] + (" (with uncommitted changes)"
                                                if code["uncommitted_changes"] else "")))
  lines += ["| | |", "|---|---|"] + [f"| {k} | {_cell(v)} |" for k, v in rows] + [""]
  if facts["classes"]:
    classes = facts["classes"]
    shown = ", ".join(classes["names"][:50]) + (" ..." if classes["count"] > 50 else "")
    lines += ["## Classes", "", f"{classes['count']} classes, names from {classes['names_from']}: "
              f"{shown}", ""]
  if facts["training"]:
    training = facts["training"]
    data = ", ".join(f"{k}={v}" for k, v in training["data"].items() if v)
    durations = ", ".join(f"{k}={v}" for k, v in training["durations"].items()) or "-"
    lines += ["## Training", "", f"- data: {data}", f"- batch size: {training['batch_size']}",
              f"- configured duration: {durations}; last logged step: {training['last_logged_step']}",
              f"- initialized from: {training['init_from'] or 'scratch'}",
              f"- workdir: {training['workdir']}", ""]
  lines += ["## Evaluation (latest)", ""]
  if facts["evaluation"]:
    scalars = {k: v for k, v in facts["evaluation"].items() if isinstance(v, (int, float, str))}
    lines += ["| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.6g} |" if isinstance(v, float) else f"| {k} | {v} |"
              for k, v in scalars.items()]
    others = sorted(set(facts["evaluation"]) - set(scalars))
    if others:
      lines += ["", f"Per-class metrics in the JSON card: {', '.join(others)}."]
  else:
    lines.append("No evaluation recorded.")
  lines += ["", "## Architecture", ""]
  if model:
    lines += ["| field | value |", "|---|---|"]
    lines += [f"| {k} | {_cell(v)} |" for k, v in model["fields"].items()]
  else:
    lines.append("Unknown: the checkpoint is not inside a run's workdir (no config.json).")
  lines += ["", f"Exported {export['date']} from {export['source']} to {export['path']}.", ""]
  return "\n".join(lines)


def write_card(facts: dict[str, Any], output: str) -> tuple[str, str]:
  """Writes the Markdown and JSON cards beside `output`; returns their paths."""
  md_path, json_path = card_paths(output)
  files.write_bytes(json_path, (json.dumps(facts, indent=2, sort_keys=True) + "\n").encode())
  files.write_bytes(md_path, markdown(facts).encode())
  return md_path, json_path
