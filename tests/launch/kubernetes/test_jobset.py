"""Specification of launch/kubernetes/jobset.yaml, the multi-host run on a Kubernetes GPU cluster:
N indexed pods whose environment is exactly what vit_jax.multihost reads to join them, process 0's
pod as coordinator, and a trainer command that vit_jax.main accepts, on a volume all pods share."""
import copy
import importlib
import os
import pathlib

import pytest
import yaml
from absl import flags

from vit_jax import multihost

from .. import pod_environment

ROOT = pathlib.Path(__file__).resolve().parents[3]
MANIFEST = ROOT / "launch" / "kubernetes" / "jobset.yaml"


@pytest.fixture(scope="module")
def jobset():
  with open(MANIFEST) as f:
    return yaml.safe_load(f)


def workers(jobset):
  (job,) = jobset["spec"]["replicatedJobs"]
  return job


def trainer(jobset):
  (container,) = workers(jobset)["template"]["spec"]["template"]["spec"]["containers"]
  return container


class RecordingEnviron(dict):
  """os.environ as vit_jax.multihost sees it, remembering which variables it asked for."""

  def __init__(self, values):
    super().__init__(values)
    self.read = []

  def get(self, key, default=None):
    self.read.append(key)
    return super().get(key, default)


def join(monkeypatch, environment):
  """What multihost.connect (no flags) passes to jax.distributed.initialize in this environment,
  and the variables it read."""
  calls = []
  monkeypatch.setattr(multihost.jax.distributed, "initialize", lambda **kw: calls.append(kw))
  monkeypatch.setattr(multihost.jax, "process_index", lambda: calls[-1]["process_id"])
  monkeypatch.setattr(multihost.jax, "process_count", lambda: calls[-1]["num_processes"])
  environ = RecordingEnviron(environment)
  monkeypatch.setattr(os, "environ", environ)
  multihost.connect(None, None, None, timeout=60)
  (call,) = calls
  return call, environ.read


def test_it_is_one_jobset_of_n_indexed_pods_restarted_together(jobset):
  assert (jobset["apiVersion"], jobset["kind"]) == ("jobset.x-k8s.io/v1alpha2", "JobSet")
  job = workers(jobset)
  spec = job["template"]["spec"]
  assert job["replicas"] == 1
  assert spec["completionMode"] == "Indexed"
  assert spec["parallelism"] == spec["completions"] >= 2   # every process runs at once
  assert spec["backoffLimit"] == 0 and spec["template"]["spec"]["restartPolicy"] == "Never"
  assert jobset["spec"]["failurePolicy"]["maxRestarts"] >= 1
  assert jobset["spec"]["network"]["enableDNSHostnames"] is True


def test_the_process_count_is_the_pod_count(jobset):
  spec = workers(jobset)["template"]["spec"]
  environment = pod_environment.container_environment(
      trainer(jobset), pod_environment.pod_annotations(jobset, "workers", 0, 0))
  assert int(environment["JAX_NUM_PROCESSES"]) == spec["completions"] == spec["parallelism"]


@pytest.mark.parametrize("pod", ["second", "last"])
def test_every_pod_joins_as_its_index_with_process_0s_pod_as_coordinator(jobset, monkeypatch, pod):
  count = workers(jobset)["template"]["spec"]["completions"]
  index = 1 if pod == "second" else count - 1
  environment = pod_environment.container_environment(
      trainer(jobset), pod_environment.pod_annotations(jobset, "workers", 0, index))
  call, _ = join(monkeypatch, environment)
  host, port = call["coordinator_address"].rsplit(":", 1)
  assert host == pod_environment.pod_host(jobset, "workers", 0, 0) == "vit-jax-workers-0-0.vit-jax"
  assert 0 < int(port) < 65536
  assert (call["num_processes"], call["process_id"]) == (count, index)


def test_it_sets_exactly_the_variables_multihost_reads(jobset, monkeypatch):
  container = trainer(jobset)
  environment = pod_environment.container_environment(
      container, pod_environment.pod_annotations(jobset, "workers", 0, 1))
  _, read = join(monkeypatch, environment)
  helpers = pod_environment.references(container)   # only there to build the others
  assert set(read) == set(environment) - helpers == {
      "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"}


def test_every_pod_runs_the_trainer_on_a_config_in_the_repository(jobset, monkeypatch):
  command = trainer(jobset)["command"]
  assert command[:3] == ["python", "-m", "vit_jax.main"]
  monkeypatch.chdir(ROOT)  # the image's working directory is the repository (Dockerfile)
  importlib.import_module("vit_jax.main")  # defines the trainer's flags in absl's FLAGS
  trainer_flags = copy.deepcopy(flags.FLAGS)
  assert trainer_flags(["vit_jax.main", *command[3:]]) == ["vit_jax.main"]  # flags it defines
  config_file = trainer_flags["config"].config_filename.partition(":")[0]
  assert (ROOT / config_file).is_file()
  assert trainer_flags.config.batch_size > 0  # get_config ran


def test_the_workdir_is_on_a_volume_every_pod_shares(jobset):
  container = trainer(jobset)
  (workdir,) = [arg.partition("=")[2] for arg in container["command"] if arg.startswith("--workdir=")]
  (mount,) = [m for m in container["volumeMounts"] if workdir.startswith(m["mountPath"] + "/")]
  (volume,) = [v for v in workers(jobset)["template"]["spec"]["template"]["spec"]["volumes"]
               if v["name"] == mount["name"]]
  assert "persistentVolumeClaim" in volume


def test_each_pod_has_gpus(jobset):
  assert int(trainer(jobset)["resources"]["limits"]["nvidia.com/gpu"]) >= 1
