"""`python -m vit_jax.main`, except that one process raises once it reaches a given train step.

How test_multihost.py makes one process of a job fail mid-training with an ordinary Python error.
Usage: failing_main.py PROCESS STEP [vit_jax.main flags...]
"""
import functools
import sys

from absl import app

from vit_jax import host_memory


def main() -> None:
  process, step = int(sys.argv[1]), int(sys.argv[2])
  kept_pages = host_memory.keep_freed_pages()  # as vit_jax.main does: before jax starts a thread
  import jax  # pylint: disable=import-outside-toplevel
  from vit_jax import main as vit_main  # pylint: disable=import-outside-toplevel
  from vit_jax.train import metric_log  # pylint: disable=import-outside-toplevel

  write = metric_log.MetricLog.write

  def write_or_fail(self, at_step, scalars):
    if jax.process_index() == process and at_step >= step:
      raise RuntimeError(f"injected failure at step {at_step}")
    write(self, at_step, scalars)

  metric_log.MetricLog.write = write_or_fail
  app.run(functools.partial(vit_main.main, kept_pages=kept_pages), argv=[sys.argv[0]] + sys.argv[3:])


if __name__ == "__main__":
  main()
