"""What the analyses read from a ViT: its patch-embedding kernel, its position table and its attention
weights on images, and which model families they cover.

Attention weights come from the XLA attention path, which sows them when asked (models/layers.py,
ATTENTION_WEIGHTS): the model is cloned onto that path with unrolled layers, so checkpoints trained
with attention_impl 'fused' or 'cpu', or with scanned layers, are read the same way.
"""
import functools
from typing import Any, Iterator

import flax.linen as nn
import jax
import numpy as np

from vit_jax.checkpoint.layers_layout import unstack_layers
from vit_jax.models.layers import ATTENTION_WEIGHTS
from vit_jax.models.vit import VisionTransformer

# Why the analyses stop at the plain ViT, per family class (the one-line error names what applies).
NOT_COVERED = {
    "HybridVisionTransformer": "its patch embedding reads ResNet features, not RGB pixels, so there "
                               "are no RGB filters; position-embedding similarity, attention distance "
                               "and rollout would apply but are not implemented for it",
    "ResNetV2": "it is a CNN: without position embeddings or attention none of them applies",
    "TransformerInTransformer": "its patch embeddings come from inner pixel transformers, so there are "
                                "no linear RGB filters; position-embedding similarity, attention "
                                "distance and rollout of its outer blocks would apply but are not "
                                "implemented for it",
    "T2TViT": "its tokens come from overlapping soft splits and its position table is a fixed "
              "sinusoid, so neither the RGB filters nor learned-embedding similarity apply; attention "
              "distance and rollout would, but are not implemented for it",
    "LVViT": "its convolutional stem replaces the linear patch embedding, so there are no RGB "
             "filters; position-embedding similarity, attention distance and rollout would apply but "
             "are not implemented for it",
}


def check_covered(model: nn.Module, model_name: str) -> None:
  """The analyses cover the ViT family (classifier 'token' or 'gap'); others get one line saying why."""
  family = type(model).__name__
  if type(model) is not VisionTransformer:  # pylint: disable=unidiomatic-typecheck (the hybrid subclasses it)
    why = NOT_COVERED.get(family, "the analyses are written for the plain ViT")
    raise ValueError(f"the Figure 7 analyses cover the ViT family (ViT-* models); {model_name} is "
                     f"a {family}: {why}")


def unrolled_params(params: Any) -> dict:
  """params with any scanned `encoderblock` stack split into encoderblock_{i} (numpy on host)."""
  return unstack_layers(jax.device_get(nn.unbox(params)))


def embedding_kernel(params: Any) -> np.ndarray:
  """The (P, P, 3, D) kernel of the linear patch embedding."""
  return np.asarray(params["embedding"]["kernel"])


def position_embedding(params: Any) -> np.ndarray:
  """The learned (1, tokens, D) position table, class token's row first when there is one."""
  return np.asarray(params["Transformer"]["posembed_input"]["pos_embedding"])


def analysis_model(model: VisionTransformer) -> VisionTransformer:
  """The same ViT on the XLA attention path with unrolled layers and no remat, returning logits."""
  return model.clone(attention_impl="xla", scan_layers=False, remat_policy="none", return_dense=False)


@functools.partial(jax.jit, static_argnums=0)
def _weights(model: nn.Module, variables: dict, images: jax.Array) -> list:
  _, state = model.apply(variables, images, train=False, mutable=[ATTENTION_WEIGHTS])
  blocks = state[ATTENTION_WEIGHTS]["Transformer"]
  return [blocks[f"encoderblock_{i}"]["MultiHeadDotProductAttention_0"]["weights"][0]
          for i in range(model.num_layers)]


def attention_weights(model: VisionTransformer, variables: dict, images: np.ndarray,
                      batch_size: int = 32) -> Iterator[list[np.ndarray]]:
  """Yields, per chunk of at most batch_size images, one float32 (chunk, heads, tokens, tokens) array
  per layer (first to last). `model` and `variables` as analysis_model and unrolled_params give them;
  chunks keep memory at batch_size images' weights (a ViT-B/16 holds 1.9 MB per image and layer).
  The last chunk is padded to batch_size so the program compiles once."""
  batch_size = max(1, min(batch_size, len(images)))
  for start in range(0, len(images), batch_size):
    chunk = np.asarray(images[start:start + batch_size], np.float32)
    padded = np.concatenate([chunk, np.zeros((batch_size - len(chunk),) + chunk.shape[1:],
                                             np.float32)]) if len(chunk) < batch_size else chunk
    layers = jax.device_get(_weights(model, variables, padded))
    yield [np.asarray(layer[:len(chunk)], np.float32) for layer in layers]
