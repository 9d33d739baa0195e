"""Specification of what the analyses read from a model: any ViT checkpoint (scanned layers, fused or
C++ attention) is read unrolled on the XLA attention path; other families are refused naming why."""
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.analysis import readout
from vit_jax.models import create_model

from ..models.tiny import TINY


def _zero_params(model):
  shapes = nn.unbox(jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))))
  return jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), shapes["params"])


def test_a_scanned_fused_checkpoint_is_read_unrolled_on_the_xla_path():
  model = create_model("ViT-micro/4", num_classes=3, scan_layers=True, attention_impl="cpu",
                       remat_policy="full", token_head=True, return_dense=True)
  analysed = readout.analysis_model(model)
  assert (analysed.attention_impl, analysed.scan_layers, analysed.remat_policy,
          analysed.return_dense) == ("xla", False, "none", False)
  params = readout.unrolled_params(_zero_params(model))
  want = _zero_params(analysed)
  assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, want)
  assert readout.embedding_kernel(params).shape == (4, 4, 3, 32)
  assert readout.position_embedding(params).shape == (1, 17, 32)


@pytest.mark.parametrize("name", [name for name in TINY if not name.startswith("ViT-")])
def test_every_other_family_is_refused_in_one_line_saying_why(name):
  model = create_model(name, num_classes=3)
  with pytest.raises(ValueError, match=rf"^the Figure 7 analyses cover the ViT family \(ViT-\* "
                                       rf"models\); {re.escape(name)} is a {type(model).__name__}: [^\n]+$"):
    readout.check_covered(model, name)
  readout.check_covered(create_model("ViT-micro/4", classifier="gap"), "ViT-micro/4")  # covered
