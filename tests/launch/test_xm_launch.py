"""Specification of launch/xm_launch.py: a sweep file becomes one XManager work unit per trial,
whose args are the trainer's flags of the sweep runner's command for that trial (its python left to
the image's entrypoint) and whose requirements ask one machine for the GPUs; all of it, the
script's import included, without cloud credentials; what the jobs could not run is refused in one
line."""
import importlib.util
import pathlib
import sys

import pytest
from absl import flags

from vit_jax.sweep import commands, sweep_file

from xmanager import xm, xm_local  # a pinned requirement: its absence is a failure, not a skip
from xmanager.xm import utils as xm_utils

ROOT = pathlib.Path(__file__).resolve().parents[2]
SWEEP = "configs/sweeps/regularization.py"
WORKDIR = "/gcs/bucket/sweeps/regularization"


class NoCredentials(Exception):
  """What google.auth.default raises here: any call to the cloud fails the test."""


def _refuse(*args, **kwargs):
  raise NoCredentials("google.auth.default was called")


SCRIPT_FLAGS = ("config", "workdir", "image", "executor", "accelerator", "accelerator_count",
                "title")


@pytest.fixture(scope="module")
def xm_launch():
  """The script, imported as xmanager's CLI imports it (launch/ first on sys.path), with no
  credentials anywhere: no key file, no gcloud configuration, google.auth.default refusing. Its
  absl flags stand in for the trainer's flags of the same names while its tests run."""
  taken = {name: flags.FLAGS[name] for name in SCRIPT_FLAGS if name in flags.FLAGS}
  for name in taken:
    delattr(flags.FLAGS, name)
  try:
    with pytest.MonkeyPatch.context() as patch:
      patch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
      patch.setenv("CLOUDSDK_CONFIG", "/nonexistent")
      patch.setattr("google.auth.default", _refuse)
      patch.syspath_prepend(str(ROOT / "launch"))
      spec = importlib.util.spec_from_file_location("xm_launch", ROOT / "launch" / "xm_launch.py")
      module = importlib.util.module_from_spec(spec)
      spec.loader.exec_module(module)
      yield module
  finally:
    sys.modules.pop("sweep_jobsets", None)
    for name in SCRIPT_FLAGS:
      if name in flags.FLAGS:
        delattr(flags.FLAGS, name)
    for name, flag in taken.items():
      flags.FLAGS[name] = flag


@pytest.fixture(autouse=True)
def no_cloud(monkeypatch):
  monkeypatch.setattr("google.auth.default", _refuse)


def test_each_trial_is_one_work_unit_running_the_runners_command_without_its_python(xm_launch):
  units = xm_launch.work_units(SWEEP, WORKDIR)
  trials = sweep_file.load(SWEEP).trials
  assert len(trials) == 12
  assert [unit.trial for unit in units] == [trial.name for trial in trials]
  for unit, trial in zip(units, trials):
    runner_command = commands.trial_command(SWEEP, f"{WORKDIR}/{trial.name}", trial.overrides)
    assert unit.args == runner_command[1:]
    assert unit.args[:2] == ["-m", "vit_jax.main"]


def test_the_sweep_file_is_named_by_its_path_in_the_image(xm_launch):
  (unit, *_) = xm_launch.work_units(str(ROOT / SWEEP), WORKDIR)  # an absolute path
  assert unit.args[2] == f"--config={SWEEP}"


def test_a_sweep_file_outside_the_image_is_refused(xm_launch, tmp_path):
  elsewhere = tmp_path / "sweep.py"
  elsewhere.write_text(
      "from vit_jax.config_cli import load_config_file\n"
      f"def get_config():\n  return load_config_file({str(ROOT / 'configs' / 'default.py')!r} + "
      "':pretrain')\n"
      "def get_sweep():\n  return [{'optim.learning_rate': 1e-3}]\n")
  with pytest.raises(xm_launch.LaunchError, match=f"^--config={elsewhere}: the image holds only "
                     "configs, vit_jax/ of"):
    xm_launch.work_units(str(elsewhere), WORKDIR)


def test_each_work_unit_asks_one_machine_for_its_gpus(xm_launch):
  (unit, *_) = xm_launch.work_units(SWEEP, WORKDIR, accelerator="h100", accelerator_count=4)
  assert unit.requirements.accelerator == xm.ResourceType.H100
  assert unit.requirements.task_requirements[xm.ResourceType.H100] == 4
  assert unit.requirements.replicas == 1
  (cpu_only, *_) = xm_launch.work_units(SWEEP, WORKDIR, accelerator="")
  assert cpu_only.requirements.accelerator is None


class RecordingExperiment:
  """Stands for xm_local.create_experiment's experiment (whose import takes seconds): records
  what is packaged and added, launches nothing."""

  def __init__(self):
    self.packaged, self.jobs = [], []

  def package(self, packageables):
    self.packaged += packageables
    return [f"executable {i}" for i, _ in enumerate(packageables)]

  def add(self, job):
    self.jobs.append(job)


class StandInExecutor:
  """Stands for an xm_local executor, whose construction imports its cloud client (seconds)."""

  class Spec(xm.ExecutorSpec):
    pass

  def __init__(self, requirements):
    self.requirements = requirements


def test_the_executor_flag_picks_xmanagers_vertex_or_kubernetes_executor(xm_launch):
  assert xm_launch.EXECUTORS == {"vertex": xm_local.Vertex, "kubernetes": xm_local.Kubernetes}


def test_the_experiment_runs_each_work_unit_on_the_image_with_its_executor(xm_launch):
  units = xm_launch.work_units(SWEEP, "/mnt/workdir/r", executor="kubernetes")
  experiment = RecordingExperiment()
  xm_launch.launch(experiment, units, "registry.example.com/vit-jax:gpu", StandInExecutor)
  (packaged,) = experiment.packaged
  assert packaged.executable_spec == xm.Container(image_path="registry.example.com/vit-jax:gpu")
  assert isinstance(packaged.executor_spec, StandInExecutor.Spec)
  assert len(experiment.jobs) == len(units) == 12
  for job, unit in zip(experiment.jobs, units):
    assert job.executable == "executable 0"
    assert isinstance(job.executor, StandInExecutor)
    assert job.executor.requirements is unit.requirements
    assert job.args.to_list(xm_utils.ARGV_ESCAPER) == unit.args  # the executors' argv


@pytest.mark.parametrize("arguments, message", [
    (dict(config="elsewhere/sweep.py"), "--config=elsewhere/sweep.py: config file"),
    (dict(workdir="gs://bucket/sweeps/r"), "--workdir=gs://bucket/sweeps/r: give an absolute path"),
    (dict(workdir="/mnt/workdir/r"), "--workdir=/mnt/workdir/r: on Vertex AI give a bucket as its "
     "jobs mount it, /gcs/BUCKET/..."),
    (dict(executor="borg"), "--executor=borg: give one of vertex, kubernetes"),
    (dict(accelerator="tpu_v4"), "--accelerator=tpu_v4: give a GPU type of xmanager (a100, "),
    (dict(accelerator="a100", accelerator_count=0), "--accelerator_count=0: give at least 1 GPU"),
])
def test_what_the_jobs_could_not_run_is_refused_naming_it(xm_launch, arguments, message):
  arguments = {"config": SWEEP, "workdir": WORKDIR, **arguments}
  with pytest.raises(xm_launch.LaunchError) as error:
    xm_launch.work_units(arguments.pop("config"), arguments.pop("workdir"), **arguments)
  assert str(error.value).startswith(message)
  assert "\n" not in str(error.value)
