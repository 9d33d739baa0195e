"""`xmanager launch launch/xm_launch.py -- --config=SWEEP.py[:arg] --workdir=DIR --image=IMAGE
[--executor=vertex|kubernetes] [--accelerator=a100 --accelerator_count=8]`: a sweep file's trials as
one XManager experiment, one work unit per trial, on Vertex AI or a Kubernetes cluster.

Each work unit runs IMAGE (launch/kubernetes/Dockerfile's, built and pushed by you: its entrypoint
is `python`, its working directory the repository) with the trial's trainer flags, the command line
`python -m vit_jax.sweep --print_commands` prints less its python, in DIR/<trial name>: the sweep
runner's layout, so `python -m vit_jax.sweep --results_only` gathers the table wherever DIR is
mounted. A prebuilt image rather than xm.python_container: nothing is built at launch (no Cloud
Build, no local docker), and it is the image the JobSets of launch/sweep_jobsets.py run.
"""
import dataclasses
import posixpath
from typing import Sequence

from absl import app, flags
from xmanager import xm, xm_local

from sweep_jobsets import LaunchError, load_sweep  # its sibling: both run from launch/
from vit_jax.sweep import commands

EXECUTORS = {"vertex": xm_local.Vertex, "kubernetes": xm_local.Kubernetes}
VERTEX_MOUNT = "/gcs/"   # Vertex AI mounts the project's buckets there (Cloud Storage FUSE)
GPUS = {gpu.name.lower(): gpu for gpu in xm.GpuType}

_CONFIG = flags.DEFINE_string("config", None, "Sweep file with get_config() and get_sweep(), under "
                              "configs/ (the image holds configs/ and vit_jax/).")
_WORKDIR = flags.DEFINE_string("workdir", None, "The sweep's directory as the jobs see it: "
                               "/gcs/BUCKET/... on Vertex AI.")
_IMAGE = flags.DEFINE_string("image", None, "The pushed image of launch/kubernetes/Dockerfile, "
                             "e.g. us-docker.pkg.dev/PROJECT/REPO/vit-jax:gpu.")
_EXECUTOR = flags.DEFINE_enum("executor", "vertex", list(EXECUTORS), "Where the trials run.")
_ACCELERATOR = flags.DEFINE_string("accelerator", "a100", "GPU type of each trial (xm.GpuType "
                                   "in lower case: a100, a100_80gib, h100, ...), '' for none.")
_ACCELERATOR_COUNT = flags.DEFINE_integer("accelerator_count", 8, "GPUs per trial (one machine).")
_TITLE = flags.DEFINE_string("title", None, "Experiment title (default: the sweep file's spec).")


@dataclasses.dataclass(frozen=True)
class WorkUnit:
  trial: str                        # the trial's name, its directory in the workdir
  args: list                        # the trainer's argv after `python`
  requirements: xm.JobRequirements  # what its one machine needs


def requirements(accelerator: str, count: int) -> xm.JobRequirements:
  """One machine with `count` GPUs of the named type ('' for none). TPUs are refused: xmanager's
  executors ask for TPU Nodes (Vertex: v2/v3 'cloud-tpu'; GKE: the tf-version annotation), and
  JAX runs on TPU VMs only."""
  if not accelerator:
    return xm.JobRequirements()
  if accelerator.lower() not in GPUS:
    raise LaunchError(f"--accelerator={accelerator}: give a GPU type of xmanager "
                      f"({', '.join(sorted(GPUS))}); for TPUs use the TPU VM commands of README.md")
  if count < 1:
    raise LaunchError(f"--accelerator_count={count}: give at least 1 GPU, or --accelerator=''")
  return xm.JobRequirements({GPUS[accelerator.lower()]: count})


def _check_workdir(workdir: str, executor: str) -> None:
  if not posixpath.isabs(workdir):
    raise LaunchError(f"--workdir={workdir}: give an absolute path as the jobs see it (the "
                      "trainer writes plain files, not gs:// URLs)")
  if executor == "vertex" and not workdir.startswith(VERTEX_MOUNT):
    raise LaunchError(f"--workdir={workdir}: on Vertex AI give a bucket as its jobs mount it, "
                      f"{VERTEX_MOUNT}BUCKET/...")


def work_units(config: str, workdir: str, *, executor: str = "vertex", accelerator: str = "a100",
               accelerator_count: int = 8) -> list[WorkUnit]:
  """One work unit per trial of the sweep file `config` ('path.py[:arg]', checked by
  sweep_file.load): the trial's trainer flags in workdir/<trial> and the machine it asks for."""
  if executor not in EXECUTORS:
    raise LaunchError(f"--executor={executor}: give one of {', '.join(EXECUTORS)}")
  sweep, in_image = load_sweep(config)
  _check_workdir(workdir, executor)
  needs = requirements(accelerator, accelerator_count)
  units = []
  for trial in sweep.trials:
    try:
      command = commands.trial_command(
          in_image, posixpath.join(workdir, trial.name), trial.overrides, python="python")
    except ValueError as e:
      raise LaunchError(f"trial {trial.name}: {e}") from None
    units.append(WorkUnit(trial.name, command[1:], needs))
  return units


def launch(experiment: xm.Experiment, units: Sequence[WorkUnit], image: str,
           executor_class: type) -> None:
  """Adds one job per work unit to the experiment: the image with the unit's args, on one machine
  of `executor_class` (xm_local.Vertex or xm_local.Kubernetes) with the unit's requirements."""
  [executable] = experiment.package([
      xm.container(executor_spec=executor_class.Spec(), image_path=image)])
  for unit in units:
    experiment.add(xm.Job(executable, executor_class(requirements=unit.requirements),
                          args=unit.args))
    print(f"work unit: {unit.trial}")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  for flag in (_CONFIG, _WORKDIR, _IMAGE):
    if not flag.value:
      raise app.UsageError(f"--{flag.name} is required")
  try:
    units = work_units(_CONFIG.value, _WORKDIR.value, executor=_EXECUTOR.value,
                       accelerator=_ACCELERATOR.value, accelerator_count=_ACCELERATOR_COUNT.value)
  except LaunchError as e:
    raise app.UsageError(str(e)) from None
  with xm_local.create_experiment(experiment_title=_TITLE.value or _CONFIG.value) as experiment:
    launch(experiment, units, _IMAGE.value, EXECUTORS[_EXECUTOR.value])


if __name__ == "__main__":
  app.run(main)
