"""`python launch/sweep_jobsets.py --config=SWEEP.py[:arg] --workdir=DIR | kubectl apply -f -`:
a sweep file's trials as JobSets, one per trial, so that a Kubernetes cluster runs them side by side.

Each JobSet is a copy of a manifest (launch/kubernetes/jobset.yaml unless --manifest says otherwise:
its image, pod count, GPUs and volume stay as they are) named `<name>-<trial number>`, whose pods
run the trial's command line, the very one `python -m vit_jax.sweep --print_commands` prints, in
DIR/<trial name>: the sweep runner's layout, so `python -m vit_jax.sweep --results_only` reads the
trials' metrics from DIR on the shared volume. DIR is a path as the pods see it, on a volume every
pod mounts.
"""
import argparse
import copy
import pathlib
import posixpath
import re
import sys
from typing import Optional, Sequence

import yaml

from vit_jax.sweep import commands, sweep_file

ROOT = pathlib.Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "launch" / "kubernetes" / "jobset.yaml"
# The repository directories that the image (launch/kubernetes/Dockerfile) holds; its working
# directory is the repository's root, so a sweep file is named by its path from there.
IMAGE_DIRS = ("configs", "vit_jax")
TRIAL_ANNOTATION = "vit-jax/trial"   # each JobSet's trial name, for `kubectl get jobsets -o yaml`
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS_LABEL_LENGTH = 63               # a pod's name is one DNS label


class LaunchError(ValueError):
  """A sweep or manifest that cannot become JobSets; the message says what to change."""


def trainer_container(jobset: dict) -> dict:
  """The container of the JobSet's pods that runs `python -m vit_jax.main` (the only one)."""
  found = [container
           for job in jobset["spec"]["replicatedJobs"]
           for container in job["template"]["spec"]["template"]["spec"]["containers"]
           if commands.TRAINER in container.get("command", []) + container.get("args", [])]
  if len(found) != 1:
    raise LaunchError(f"the manifest has {len(found)} containers that run {commands.TRAINER}; "
                      "give one (see launch/kubernetes/jobset.yaml)")
  return found[0]


def image_path(config_path: str) -> str:
  """The sweep file's path from the repository's root, as the pods find it in the image."""
  path = pathlib.Path(config_path).resolve()
  if not path.is_relative_to(ROOT) or path.relative_to(ROOT).parts[0] not in IMAGE_DIRS:
    raise LaunchError(f"--config={config_path}: the image holds only {', '.join(IMAGE_DIRS)}/ of "
                      f"{ROOT}; put the sweep file under configs/ and rebuild the image")
  return path.relative_to(ROOT).as_posix()


def load_sweep(config: str) -> tuple[sweep_file.Sweep, str]:
  """The sweep file `config` ('path.py[:arg]', checked by sweep_file.load) and its name in the image,
  with its argument: what every launcher of a sweep reads first."""
  path, _, argument = config.partition(":")
  try:
    sweep = sweep_file.load(config)
  except sweep_file.SweepError as e:
    raise LaunchError(str(e)) from None
  return sweep, image_path(path) + (f":{argument}" if argument else "")


def default_name(config_path: str) -> str:
  """The sweep file's name as a DNS label: configs/sweeps/regularization.py -> regularization."""
  name = re.sub(r"[^a-z0-9-]+", "-", pathlib.Path(config_path).stem.lower()).strip("-")
  return name or "sweep"


def _check_name(name: str, jobset: dict, trials: int) -> None:
  """Refuses a name that is no DNS label, or whose longest pod name would not be one, as JobSet's
  admission check would: <jobset>-<replicated job>-<job index>-<pod index>-<5 random characters>."""
  if not _DNS_LABEL.match(name):
    raise LaunchError(f"--name={name}: use lower-case letters, digits and '-', starting with a letter")
  longest = max(
      len(f"{name}-{trials}-{job['name']}-{job.get('replicas', 1) - 1}-"
          f"{job['template']['spec'].get('completions', 1) - 1}-abcde")
      for job in jobset["spec"]["replicatedJobs"])
  if longest > _DNS_LABEL_LENGTH:
    raise LaunchError(f"--name={name}: the pods' names would have {longest} characters, more than "
                      f"the {_DNS_LABEL_LENGTH} of a DNS label; give a shorter --name")


def shared_mounts(jobset: dict) -> list[str]:
  """Where the trainer's container mounts volumes that outlive a pod (all but emptyDir ones)."""
  volumes = {volume["name"]: volume
             for job in jobset["spec"]["replicatedJobs"]
             for volume in job["template"]["spec"]["template"]["spec"].get("volumes", [])}
  return [mount["mountPath"] for mount in trainer_container(jobset).get("volumeMounts", [])
          if "emptyDir" not in volumes.get(mount["name"], {})]


def _check_workdir(workdir: str, jobset: dict) -> None:
  mounts = shared_mounts(jobset)
  if not posixpath.isabs(workdir) or not any(
      posixpath.commonpath([workdir, mount]) == mount for mount in mounts):
    raise LaunchError(f"--workdir={workdir}: give the sweep's directory as the pods see it, under a "
                      f"volume the manifest mounts ({', '.join(mounts) or 'none'})")


def trial_jobsets(config: str, workdir: str, manifest: dict, name: Optional[str] = None
                  ) -> list[dict]:
  """One JobSet per trial of the sweep file `config` ('path.py[:arg]', checked by
  sweep_file.load), each a copy of `manifest` running the trial's command in workdir/<trial>."""
  if not isinstance(manifest, dict) or manifest.get("kind") != "JobSet":
    raise LaunchError("the manifest is no JobSet: give a copy of launch/kubernetes/jobset.yaml")
  sweep, in_image = load_sweep(config)
  name = name or default_name(config.partition(":")[0])
  _check_name(name, manifest, len(sweep.trials))
  _check_workdir(workdir, manifest)
  jobsets = []
  for number, trial in enumerate(sweep.trials, start=1):
    jobset = copy.deepcopy(manifest)
    jobset["metadata"]["name"] = f"{name}-{number}"
    jobset["metadata"].setdefault("annotations", {})[TRIAL_ANNOTATION] = trial.name
    container = trainer_container(jobset)
    try:
      container["command"] = commands.trial_command(
          in_image, posixpath.join(workdir, trial.name), trial.overrides, python="python")
    except ValueError as e:
      raise LaunchError(f"trial {trial.name}: {e}") from None
    container.pop("args", None)
    jobsets.append(jobset)
  return jobsets


def main(argv: Sequence[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", required=True,
                      help="Sweep file with get_config() and get_sweep(), under configs/.")
  parser.add_argument("--workdir", required=True,
                      help="The sweep's directory as the pods see it, on their shared volume.")
  parser.add_argument("--manifest", default=str(MANIFEST),
                      help="JobSet to copy per trial (its image, pods, GPUs and volumes).")
  parser.add_argument("--name", default=None,
                      help="JobSet names are <name>-<trial number> (default: the sweep file's name).")
  args = parser.parse_args(argv)
  try:
    with open(args.manifest) as f:
      manifest = yaml.safe_load(f)
    jobsets = trial_jobsets(args.config, args.workdir, manifest, args.name)
  except (LaunchError, OSError, yaml.YAMLError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  sys.stdout.write(yaml.safe_dump_all(jobsets, sort_keys=False))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
