"""Test-wide setup: 8 fake CPU devices, compiling fast, set before jax or tensorflow is imported
anywhere."""
import os

from .processes import FAST_COMPILE

# The tests' programs are tiny, so compiling them is most of what the suite does: without LLVM's
# optimisation passes (FAST_COMPILE) it compiles about a third faster. The tests and their child
# processes then build every program the same way; benchmarks (experiments/) measure speed at the
# default level.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + f" --xla_force_host_platform_device_count=8 {FAST_COMPILE}").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


import pytest  # noqa: E402  (after the environment is set)


_RUN_DIRECTORY = "VIT_JAX_TEST_RUN_DIRECTORY"  # Scratch space of one test run, for all its processes.


def pytest_configure(config):
  """Tests compile the same tiny programs again and again (each build.setup jits anew): a persistent
  compilation cache shared by this run's workers compiles each once. Set in-process only, so child
  processes started by tests use a cache only where a test gives them one."""
  del config
  import jax  # pylint: disable=import-outside-toplevel
  if "PYTEST_XDIST_WORKER" not in os.environ:  # The process that starts the run (workers inherit it).
    import tempfile  # pylint: disable=import-outside-toplevel
    os.environ[_RUN_DIRECTORY] = tempfile.mkdtemp(prefix="vit_jax_tests_")
  jax.config.update("jax_compilation_cache_dir",
                    os.path.join(os.environ[_RUN_DIRECTORY], "compilation_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def pytest_unconfigure(config):
  """The process that started the run removes its scratch space once every worker has finished."""
  del config
  if "PYTEST_XDIST_WORKER" not in os.environ:
    import shutil  # pylint: disable=import-outside-toplevel
    shutil.rmtree(os.environ.pop(_RUN_DIRECTORY), ignore_errors=True)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
  """Makes `--dist loadgroup` keep each xdist_group on one worker, as the module fixtures of the
  multi-process tests need (each would run once per worker otherwise). pytest-xdist 3.8 marks the
  group by appending "@<group>" to the node id through item._nodeid, which pytest 9 no longer
  reads (its node ids are structured), so the groups were silently spread over the workers; this
  appends it where it is missing."""
  if not getattr(config.option, "loadgroup", False):  # Set on the xdist workers of loadgroup.
    return
  from _pytest.nodeid import NodeId  # pylint: disable=import-outside-toplevel
  for item in items:
    groups = sorted({str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
                     for mark in item.iter_markers("xdist_group")})
    suffix = "@" + "_".join(groups)
    if groups and not item.nodeid.endswith(suffix):
      item._id = NodeId.parse(item.nodeid + suffix)  # pylint: disable=protected-access


@pytest.fixture(scope="session")  # It keeps no state: module fixtures may use it too.
def train_losses():
  """Runs a few sharded train steps of a config on learnable synthetic data; returns the losses.

  Usage: `losses = train_losses(config, steps=8, num_classes=10)`; the config's model, mesh, sharding
  and optimizer are used as they are (config.data.image_size sets the image size). Labels are the
  brightest of `num_classes` horizontal bands, so any family can fit them in a few steps.
  """
  import numpy as np  # pylint: disable=import-outside-toplevel

  from vit_jax import parallel  # pylint: disable=import-outside-toplevel
  from vit_jax.train import build  # pylint: disable=import-outside-toplevel

  def run(config, steps, num_classes=10, seed=0):
    size = config.data.image_size
    setup = build.setup(config, num_classes, train_examples=steps * config.batch_size)
    rng = np.random.RandomState(seed)
    band = max(size // num_classes, 1)
    losses = []
    state = setup.init_state()
    with parallel.activate(setup.mesh, setup.rules):
      for _ in range(steps):
        labels = rng.randint(0, num_classes, config.batch_size).astype(np.int32)
        images = rng.uniform(-1, 0, (config.batch_size, size, size, 3)).astype(np.float32)
        for i, label in enumerate(labels):
          images[i, label * band:(label + 1) * band] += 1.0
        batch = parallel.global_batch({"image": images, "label": labels}, setup.mesh, setup.rules)
        state, metrics = setup.train_step(state, batch)
        losses.append(float(metrics["loss"]))
    return losses

  return run


@pytest.fixture(scope="session")
def compilation_cache(tmp_path_factory):
  """A persistent XLA compilation cache for child processes (JAX_COMPILATION_CACHE_DIR): jobs that
  compile the same programs (model, mesh, schedule) then compile them once per test session."""
  return tmp_path_factory.mktemp("compilation_cache")

