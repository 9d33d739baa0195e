"""Specification of launch/sweep_jobsets.py: a sweep file becomes one JobSet per trial, each the
manifest with the trial's command line (the one `python -m vit_jax.sweep --print_commands` gives) in
the trial's directory of the sweep's workdir, its pods joining as the manifest's do; what the pods
could not run is refused in one line."""
import importlib.util
import os
import pathlib
import shutil

import pytest
import yaml

from vit_jax.sweep import commands, sweep_file

from . import pod_environment

ROOT = pathlib.Path(__file__).resolve().parents[2]
_SPEC = importlib.util.spec_from_file_location("sweep_jobsets", ROOT / "launch" / "sweep_jobsets.py")
sweep_jobsets = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(sweep_jobsets)

SWEEP = f'''
from vit_jax.config_cli import load_config_file

def get_config():
  return load_config_file({str(ROOT / "configs" / "default.py")!r} + ":pretrain")

def get_sweep():
  return [{{"optim.learning_rate": 1e-3}},
          {{"optim.learning_rate": 3e-3, "data.pp_train": "decode|resize(16)|value_range(-1, 1)"}}]
'''
WORKDIR = "/mnt/workdir/sweeps/lr"


@pytest.fixture
def repository(tmp_path, monkeypatch):
  """A stand-in repository root holding configs/sweeps/lr.py, the launcher's ROOT; the cwd."""
  (tmp_path / "configs" / "sweeps").mkdir(parents=True)
  (tmp_path / "configs" / "sweeps" / "lr.py").write_text(SWEEP)
  monkeypatch.setattr(sweep_jobsets, "ROOT", tmp_path)
  monkeypatch.chdir(tmp_path)
  return tmp_path


@pytest.fixture(scope="module")
def manifest():
  with open(sweep_jobsets.MANIFEST) as f:
    return yaml.safe_load(f)


def test_each_trial_is_the_manifest_running_the_trials_command_in_its_directory(repository, manifest):
  jobsets = sweep_jobsets.trial_jobsets("configs/sweeps/lr.py", WORKDIR, manifest)
  trials = sweep_file.load("configs/sweeps/lr.py").trials
  assert [j["metadata"]["name"] for j in jobsets] == ["lr-1", "lr-2"]
  for jobset, trial in zip(jobsets, trials):
    assert jobset["metadata"]["annotations"] == {sweep_jobsets.TRIAL_ANNOTATION: trial.name}
    container = sweep_jobsets.trainer_container(jobset)
    assert container["command"] == commands.trial_command(
        "configs/sweeps/lr.py", f"{WORKDIR}/{trial.name}", trial.overrides, python="python")
    # Everything else is the manifest's: image, pods, GPUs, volumes, environment.
    rest = {**jobset, "metadata": manifest["metadata"]}
    sweep_jobsets.trainer_container(rest)["command"] = sweep_jobsets.trainer_container(
        manifest)["command"]
    assert rest == manifest
  assert sweep_jobsets.trainer_container(manifest)["command"][3] == (
      "--config=configs/default.py:pretrain")  # the manifest itself is left as it was


def test_a_trials_pods_join_their_own_jobset(repository, manifest):
  jobset = sweep_jobsets.trial_jobsets("configs/sweeps/lr.py", WORKDIR, manifest, name="lr")[1]
  environment = pod_environment.container_environment(
      sweep_jobsets.trainer_container(jobset),
      pod_environment.pod_annotations(jobset, "workers", 0, 1))
  assert environment["JAX_COORDINATOR_ADDRESS"].startswith(
      pod_environment.pod_host(jobset, "workers", 0, 0) + ":")
  assert pod_environment.pod_host(jobset, "workers", 0, 0) == "lr-2-workers-0-0.lr-2"
  assert environment["JAX_PROCESS_ID"] == "1"


def test_the_sweep_file_is_named_by_its_path_in_the_image(repository, manifest):
  argument = repository / "configs" / "sweeps" / "lr.py"
  jobsets = sweep_jobsets.trial_jobsets(f"{argument}", WORKDIR, manifest)  # an absolute path
  assert sweep_jobsets.trainer_container(jobsets[0])["command"][3] == "--config=configs/sweeps/lr.py"
  dockerfile = (ROOT / "launch" / "kubernetes" / "Dockerfile").read_text().splitlines()
  copied = {line.split()[1] for line in dockerfile if line.startswith("COPY ")}
  assert set(sweep_jobsets.IMAGE_DIRS) <= copied


@pytest.mark.parametrize("config, workdir, name, message", [
    ("elsewhere/lr.py", WORKDIR, None, "--config=elsewhere/lr.py: the image holds only configs, "
     "vit_jax/ of"),
    ("configs/sweeps/lr.py", "/tmp/sweeps/lr", None, "--workdir=/tmp/sweeps/lr: give the sweep's "
     "directory as the pods see it, under a volume the manifest mounts (/mnt/workdir)"),
    ("configs/sweeps/lr.py", "/dev/shm/lr", None, "--workdir=/dev/shm/lr: give"),  # one per pod
    ("configs/sweeps/lr.py", "sweeps/lr", None, "--workdir=sweeps/lr: give"),
    ("configs/sweeps/lr.py", WORKDIR, "Learning_Rate", "--name=Learning_Rate: use lower-case"),
    ("configs/sweeps/lr.py", WORKDIR, "a" * 44, f"--name={'a' * 44}: the pods' names would have "
     "64 characters, more than the 63 of a DNS label; give a shorter --name"),
    ("configs/sweeps/missing.py", WORKDIR, None, "--config=configs/sweeps/missing.py: config file "
     "configs/sweeps/missing.py does not exist"),
])
def test_what_the_pods_could_not_run_is_refused_naming_it(repository, manifest, config, workdir,
                                                           name, message):
  (repository / "elsewhere").mkdir()
  shutil.copy(repository / "configs" / "sweeps" / "lr.py", repository / "elsewhere" / "lr.py")
  with pytest.raises(sweep_jobsets.LaunchError) as error:
    sweep_jobsets.trial_jobsets(config, workdir, manifest, name)
  assert str(error.value).startswith(message)
  assert "\n" not in str(error.value)


def test_a_manifest_that_is_no_jobset_is_refused(repository):
  with pytest.raises(sweep_jobsets.LaunchError, match="the manifest is no JobSet"):
    sweep_jobsets.trial_jobsets("configs/sweeps/lr.py", WORKDIR, {"kind": "Job"})


def test_the_command_prints_one_yaml_stream_for_kubectl(repository, capsys):
  assert sweep_jobsets.main(["--config=configs/sweeps/lr.py", f"--workdir={WORKDIR}"]) == 0
  jobsets = list(yaml.safe_load_all(capsys.readouterr().out))
  assert [(j["kind"], j["metadata"]["name"]) for j in jobsets] == [("JobSet", "lr-1"),
                                                                  ("JobSet", "lr-2")]
  assert sweep_jobsets.main(["--config=configs/sweeps/lr.py", "--workdir=/elsewhere"]) == 2
  out, err = capsys.readouterr()
  assert out == "" and err.startswith("error: --workdir=/elsewhere: ") and err.count("\n") == 1
  assert os.listdir(repository) == ["configs"]  # it writes nothing
