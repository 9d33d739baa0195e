"""Specification of the pod planner: compiled per-device memory, FLOPs and collectives on fake devices."""
import os
import pathlib
import sys

from vit_jax import plan
from vit_jax.configuration import base_config

from . import processes

ROOT = pathlib.Path(__file__).resolve().parents[1]


def micro_config(strategy, **mesh):
  config = base_config("ViT-micro/4")
  config.data.image_size = 16
  config.batch_size = 32
  config.train.steps = 10
  config.sharding = strategy
  config.fsdp_min_size = 0
  config.mesh.update(mesh)
  return config


def test_fsdp_plan_splits_state_and_gathers_parameters():
  replicated = plan.plan(micro_config("data_parallel", data=8, fsdp=1), num_classes=10)
  sharded = plan.plan(micro_config("fsdp", data=1, fsdp=8), num_classes=10)
  assert replicated.devices == sharded.devices == 8
  assert sharded.param_bytes < replicated.param_bytes / 4
  assert sharded.opt_state_bytes < replicated.opt_state_bytes / 4
  assert sharded.collective_bytes.get("all-gather", 0) > 0      # parameters gathered for compute
  assert replicated.collective_bytes.get("all-reduce", 0) > 0   # gradients summed over data
  assert replicated.xla_temp_bytes > 0 and replicated.analytic_flops > 0


def test_deep_encoders_are_planned_scanned_unless_the_config_says_otherwise():
  unset = base_config("ViT-H/14")
  assert "picked" in plan.pick_scan_layers(unset, num_layers=32)
  assert unset.model.scan_layers is True
  shallow = base_config("ViT-B/16")
  assert plan.pick_scan_layers(shallow, num_layers=12) == ""
  assert shallow.model.scan_layers is None  # the model's default: unrolled
  unrolled = base_config("ViT-L/16")
  unrolled.model.scan_layers = False
  assert "advice" in plan.pick_scan_layers(unrolled, num_layers=24)
  assert unrolled.model.scan_layers is False


def test_collective_traffic_reads_hlo_shapes():
  hlo = ("  %ag = f32[8,128]{1,0} all-gather(f32[1,128]{1,0} %p), replica_groups={}\n"
         "  %ar = (f32[4]{0}, bf16[2,2]{1,0}) all-reduce(%a, %b), to_apply=%sum\n")
  assert plan.collective_traffic(hlo) == {"all-gather": 8 * 128 * 4, "all-reduce": 4 * 4 + 4 * 2}


def test_cli_simulates_the_mesh_it_is_given(tmp_path):
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  proc = processes.run(
      [sys.executable, "-m", "vit_jax.plan", "--config=configs/default.py:pretrain",
       "--mesh=data:2,fsdp:8,tensor:1", "--config.model_name=ViT-micro/4", "--config.sharding=fsdp",
       "--config.batch_size=32", "--config.fsdp_min_size=0"], cwd=ROOT, env=env)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "= 16 devices, fsdp" in proc.stdout
  assert "optimizer state" in proc.stdout and "all-gather" in proc.stdout
