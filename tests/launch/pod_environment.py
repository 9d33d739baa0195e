"""What a JobSet's pod sees, as Kubernetes and the JobSet controller (v0.6 and later) make it, for
tests that check a manifest without a cluster.

The annotations are those JobSet's controller and the indexed Job's controller put on every pod;
the environment follows Kubernetes' rules: `fieldRef` values read the pod's annotations, and `$(NAME)`
in a value is replaced by the variable NAME defined earlier in the list (left as is otherwise).
"""
import re

_ANNOTATION = re.compile(r"^metadata\.annotations\['([^']+)'\]$")
_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def pod_annotations(jobset: dict, replicated_job: str, job_index: int, pod_index: int) -> dict:
  """The annotations of pod `pod_index` of Job `job_index` of `replicated_job`."""
  name = jobset["metadata"]["name"]
  subdomain = jobset["spec"].get("network", {}).get("subdomain") or name
  annotations = {
      "jobset.sigs.k8s.io/jobset-name": name,
      "jobset.sigs.k8s.io/replicatedjob-name": replicated_job,
      "jobset.sigs.k8s.io/job-index": str(job_index),
      "batch.kubernetes.io/job-completion-index": str(pod_index),
  }
  coordinator = jobset["spec"].get("coordinator")
  if coordinator:  # its pod's host name in the JobSet's headless Service
    annotations["jobset.sigs.k8s.io/coordinator"] = (
        f"{name}-{coordinator['replicatedJob']}-{coordinator.get('jobIndex', 0)}-"
        f"{coordinator.get('podIndex', 0)}.{subdomain}")
  return annotations


def pod_host(jobset: dict, replicated_job: str, job_index: int, pod_index: int) -> str:
  """The DNS name of that pod (spec.network.enableDNSHostnames)."""
  name = jobset["metadata"]["name"]
  subdomain = jobset["spec"].get("network", {}).get("subdomain") or name
  return f"{name}-{replicated_job}-{job_index}-{pod_index}.{subdomain}"


def container_environment(container: dict, annotations: dict) -> dict:
  """The container's environment variables, resolved in order."""
  environment = {}
  for variable in container.get("env", []):
    if "value" in variable:
      value = _REFERENCE.sub(lambda m: environment.get(m.group(1), m.group(0)), str(variable["value"]))
    else:
      path = variable["valueFrom"]["fieldRef"]["fieldPath"]
      match = _ANNOTATION.match(path)
      assert match, f"{variable['name']}: only annotations are read here, not {path}"
      assert match.group(1) in annotations, f"{variable['name']}: no pod has annotation {path}"
      value = annotations[match.group(1)]
    environment[variable["name"]] = value
  return environment


def references(container: dict) -> set:
  """The variables that other variables' values refer to as $(NAME)."""
  return {name for variable in container.get("env", []) if "value" in variable
          for name in _REFERENCE.findall(str(variable["value"]))}
