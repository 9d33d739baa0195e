"""Plans a run for a pod that is not here: compiles the train step for a simulated mesh and reports,
per device, parameter / optimizer-state / activation memory, FLOPs and collective traffic.

  python -m vit_jax.plan --config=configs/default.py:pretrain --mesh=data:8,fsdp:8,tensor:1 \
      --config.model_name=ViT-H/14 --config.data.image_size=224 --config.batch_size=4096

The mesh is made of fake CPU devices and nothing is allocated: shapes are abstract and the step is
compiled ahead of time (XLA's memory and cost analyses of the partitioned program).
"""
import os
import sys


def _device_count_from_argv(argv: list[str]) -> int:
  """The product of --mesh sizes, read before JAX starts (fake devices must be set up first)."""
  for arg in argv:
    if arg.startswith("--mesh="):
      count = 1
      for part in arg.split("=", 1)[1].split(","):
        count *= int(part.split(":")[1])
      return count
  return 1


if __name__ == "__main__":
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count="
                             f"{_device_count_from_argv(sys.argv)}")
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import ml_collections  # noqa: E402

from vit_jax import flops, parallel  # noqa: E402
from vit_jax.train import build  # noqa: E402

_COLLECTIVE = re.compile(
    r"=\s*(\(?[^=]*?\)?)\s+(all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute)"
    r"(?:-start)?\(")
_SHAPE = re.compile(r"(f32|bf16|f16|s32|u32|s8|u8|pred|f64|s64)\[([\d,]*)\]")
_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "s8": 1, "u8": 1, "pred": 1, "f64": 8,
          "s64": 8}


# An encoder this deep is planned scanned unless the config says otherwise: unrolled, its compile
# grows with the depth (one CPU device: ViT-L/16 56 s unrolled vs 24 s scanned, ViT-H/14 82 s vs 16 s;
# experiments/README.md "## Overheads around the step"), and a pod's partitioned program more so.
SCAN_FROM_LAYERS = 24


def pick_scan_layers(config: ml_collections.ConfigDict, num_layers: int) -> str:
  """Sets config.model.scan_layers=True where the config leaves it unset (None) and the encoder has
  at least SCAN_FROM_LAYERS layers; returns the line that says so, or advises scanning where the
  config unrolls such an encoder ('' otherwise)."""
  if num_layers < SCAN_FROM_LAYERS or "scan_layers" not in config.model:
    return ""
  if config.model.get("scan_layers") is None:
    config.model.scan_layers = True
    return (f"scan_layers=True picked for {num_layers} layers (it compiles in a fraction of the "
            "unrolled time); --config.model.scan_layers=False plans the unrolled encoder")
  if not config.model.scan_layers:
    return (f"advice: {num_layers} unrolled layers compile several times slower than scanned ones; "
            "--config.model.scan_layers=True")
  return ""


@dataclasses.dataclass
class Plan:
  """Per-device figures of one compiled train step (bytes and FLOPs)."""
  devices: int
  param_bytes: float
  opt_state_bytes: float
  xla_argument_bytes: float
  xla_temp_bytes: float
  xla_flops: float
  analytic_flops: float
  collective_bytes: dict[str, float]
  compile_seconds: float = 0.0   # lowering + XLA compile of the train step on this host
  scan_note: str = ""            # what pick_scan_layers chose or advises

  @property
  def peak_bytes(self) -> float:
    """Arguments (state + batch) plus XLA's temporaries (activations and workspace)."""
    return self.xla_argument_bytes + self.xla_temp_bytes


def _per_device_bytes(abstract, shardings) -> float:
  return float(sum(math.prod(s.shard_shape(leaf.shape)) * leaf.dtype.itemsize
                   for leaf, s in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings))))


def collective_traffic(hlo_text: str) -> dict[str, float]:
  """Bytes produced per device by each kind of collective in an optimized HLO module."""
  traffic: dict[str, float] = {}
  for match in _COLLECTIVE.finditer(hlo_text):
    shapes, kind = match.groups()
    size = sum(_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
               for dtype, dims in _SHAPE.findall(shapes))
    traffic[kind] = traffic.get(kind, 0.0) + size
  return traffic


def plan(config: ml_collections.ConfigDict, num_classes: int = 1000) -> Plan:
  """Compiles the train step of `config` on the current (fake) devices and reads XLA's analyses."""
  if config.train.steps == 0 and not config.train.epochs and not config.train.examples:
    config.train.steps = 1000
  scan_note = pick_scan_layers(
      config, getattr(build.build_model(config, num_classes), "num_layers", 0))
  setup = build.setup(config, num_classes, train_examples=10 ** 9)
  start = time.perf_counter()
  with parallel.activate(setup.mesh, setup.rules):
    compiled = setup.train_step.lower(setup.abstract_state, setup.abstract_batch()).compile()
  compile_seconds = time.perf_counter() - start
  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  devices = setup.mesh.devices.size
  return Plan(
      devices=devices,
      param_bytes=_per_device_bytes(setup.abstract_state.params, setup.state_shardings.params),
      opt_state_bytes=_per_device_bytes(setup.abstract_state.opt_state,
                                        setup.state_shardings.opt_state),
      xla_argument_bytes=float(memory.argument_size_in_bytes),
      xla_temp_bytes=float(memory.temp_size_in_bytes),
      xla_flops=float(cost.get("flops", 0.0)),
      analytic_flops=flops.train_flops_per_example(setup.model) * config.batch_size / devices,
      collective_bytes=collective_traffic(compiled.as_text()),
      compile_seconds=compile_seconds, scan_note=scan_note)


def format_plan(config: ml_collections.ConfigDict, result: Plan) -> str:
  gib = 2.0 ** 30
  lines = [
      f"{config.model_name} @ {config.data.image_size}px, global batch {config.batch_size}, "
      f"mesh {dict(config.mesh)} = {result.devices} devices, {config.sharding}, "
      f"remat {config.model.remat_policy or 'none'}, scan {bool(config.model.scan_layers)}",
      "per device:",
      f"  parameters        {result.param_bytes / gib:9.3f} GiB (analytic, from the shardings)",
      f"  optimizer state   {result.opt_state_bytes / gib:9.3f} GiB (analytic)",
      f"  XLA arguments     {result.xla_argument_bytes / gib:9.3f} GiB (state + batch shard)",
      f"  XLA temporaries   {result.xla_temp_bytes / gib:9.3f} GiB (activations, gradients, workspace)",
      f"  peak (sum)        {result.peak_bytes / gib:9.3f} GiB",
      f"  FLOPs per step    {result.analytic_flops / 1e12:9.3f} TFLOP (analytic, matmuls only); "
      f"XLA counts {result.xla_flops / 1e12:.3f} TFLOP"
      + (" (a scanned layer loop is counted once)" if config.model.scan_layers else ""),
  ]
  for kind, size in sorted(result.collective_bytes.items()):
    lines.append(f"  {kind:17s} {size / gib:9.3f} GiB per step")
  lines.append(f"compile: {result.compile_seconds:.1f} s on this host (lowering + XLA, to the first step)")
  if result.scan_note:
    lines.append(result.scan_note)
  return "\n".join(lines)


def main(argv):
  del argv
  from absl import flags  # pylint: disable=import-outside-toplevel
  config = flags.FLAGS.config
  sizes = dict(part.split(":") for part in flags.FLAGS.mesh.split(","))
  config.mesh.update({axis: int(n) for axis, n in sizes.items()})
  print(format_plan(config, plan(config, flags.FLAGS.num_classes)))


if __name__ == "__main__":
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
  flags.DEFINE_string("mesh", "data:1,fsdp:1,tensor:1", "Simulated mesh, e.g. data:8,fsdp:8,tensor:1.")
  flags.DEFINE_integer("num_classes", 1000, "Classes of the head.")
  flags.mark_flags_as_required(["config"])
  app.run(main)
