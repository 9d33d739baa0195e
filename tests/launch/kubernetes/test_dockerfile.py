"""Specification of launch/kubernetes/Dockerfile, the GPU pods' image: the pinned requirements with
the CUDA plugin of the pinned jax, and the repository as its working directory holding what the
manifest's and the sweep's commands name."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[3]
DOCKERFILE = (ROOT / "launch" / "kubernetes" / "Dockerfile").read_text()


def instructions(name):
  return [line.split(None, 1)[1] for line in DOCKERFILE.splitlines() if line.startswith(name + " ")]


def test_it_installs_the_pinned_requirements_and_the_cuda_plugin_of_the_pinned_jax():
  (jax_pin,) = re.findall(r"^jax==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M)
  installs = " ".join(instructions("RUN"))
  assert "pip install --no-cache-dir -r requirements.txt" in installs
  assert f'"jax[cuda12]=={jax_pin}"' in installs


def copied():
  """The repository paths the image copies."""
  return {source for line in instructions("COPY") for source in line.split()[:-1]}


def test_it_holds_the_package_and_configs_at_its_working_directory():
  (workdir,) = instructions("WORKDIR")
  assert workdir == "/vit_jax"
  assert {"requirements.txt", "setup.py", "vit_jax", "configs"} <= copied()
  assert all((ROOT / source).exists() for source in copied())
  assert "pip install --no-cache-dir --no-deps -e ." in instructions("RUN")


def test_its_entrypoint_is_python_so_a_job_gives_only_the_trainers_arguments():
  assert instructions("ENTRYPOINT") == ['["python"]']
