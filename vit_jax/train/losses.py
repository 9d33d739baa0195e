"""Classification losses: softmax cross-entropy (single label) and sigmoid cross-entropy (multi-label)."""
import jax
import jax.numpy as jnp
import optax


def smoothed_one_hot(labels: jax.Array, num_classes: int, smoothing: float) -> jax.Array:
  """One-hot targets with label smoothing: (1 - s) on the true class plus s spread over all classes."""
  one_hot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  return one_hot * (1.0 - smoothing) + smoothing / num_classes


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array, smoothing: float = 0.0) -> jax.Array:
  """Per-example loss for integer labels (B,) against logits (B, K)."""
  targets = smoothed_one_hot(labels, logits.shape[-1], smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def sigmoid_cross_entropy(logits: jax.Array, multi_hot: jax.Array) -> jax.Array:
  """Per-example loss for multi-hot targets (B, K): independent binary losses summed over classes (as big_vision)."""
  losses = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), multi_hot.astype(jnp.float32))
  return jnp.sum(losses, axis=-1)


def classification_loss(logits: jax.Array, labels: jax.Array, smoothing: float = 0.0,
                        multi_label: bool = False) -> jax.Array:
  """Per-example loss. Integer (B,) labels: softmax CE with label smoothing. (B, K) targets: sigmoid CE
  for multi-label data (each class its own yes/no), softmax CE against the target distribution for
  single-label data whose targets were mixed or smoothed in the pipeline (mixup, cutmix, onehot)."""
  if labels.ndim == logits.ndim:
    if multi_label:
      return sigmoid_cross_entropy(logits, labels)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), labels.astype(jnp.float32))
  return softmax_cross_entropy(logits, labels, smoothing)
