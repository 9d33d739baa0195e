"""What a model family tells the trainer and the checkpoint tools about itself.

Every family class has a property `interface` that returns a ModelInterface computed from its fields,
so no caller guesses with getattr. Every family also sows the same intermediates into the
'intermediates' collection; read them with `model.apply(variables, images, mutable=['intermediates'])`
(each entry is a one-element tuple):
  stem_output  the patch / stem embedding output, before any class token or position embedding
               ((B, tokens, D) for transformers; BiT: the root block's (B, H/4, W/4, C) map)
  encoded      the encoder output after its final norm, class token included ((B, 1 + tokens, D);
               BiT: the last feature map after norm-pre-head and ReLU)
  head_input   the vector fed to the head (B, width): pooled, after the representation layer if any;
               what the model returns with num_classes=0
Sowing changes neither the outputs nor the parameters. The names differ from the submodules of every
family: a sown name shares the module's namespace, and `stem` (LV-ViT's conv stem) and `pre_logits`
(ViT's representation layer) are parameter names of the public layouts.
"""
import dataclasses
from typing import Any, NamedTuple

INTERMEDIATES = "intermediates"
INTERMEDIATE_NAMES = ("stem_output", "encoded", "head_input")
POOLINGS = ("token", "gap", "token+aux_max")
POSITION_EMBEDDINGS = ("learned", "sinusoid", "none")


class DenseOutput(NamedTuple):
  """What a model with dense outputs returns in training with return_dense=True (token labeling):
  class logits, per-token logits and the MixToken box.

  mix_box is int32 (4,) = (row_start, col_start, row_end, col_end) on the token grid, the official
  (bbx1, bby1, bbx2, bby2); all zeros when no tokens were mixed. token_logits are already swapped back,
  so token n of example b is compared with the dense label of image b.
  """
  cls_logits: Any    # (B, classes) float32
  token_logits: Any  # (B, tokens, classes) float32
  mix_box: Any       # (4,) int32


class MaskedPatchOutput(NamedTuple):
  """What a model with masked patch prediction returns with return_dense=True: its class logits, one
  prediction per patch token and which patches were corrupted (models/masked_patches.py).

  The loss is taken over the corrupted patches only (train/masked_patch.py); the class logits are
  those of the corrupted input (the pretraining loss does not train the class head).
  """
  cls_logits: Any    # (B, classes) float32
  patch_logits: Any  # (B, tokens, masked_patches.COLOUR_CLASSES) float32
  corrupted: Any     # (B, tokens) bool


@dataclasses.dataclass(frozen=True)
class ModelInterface:
  """How a model pools, embeds positions and what its outputs and checkpoints hold."""
  # How the classifier input is pooled: 'token' (the class token), 'gap' (mean of the tokens or of a
  # CNN feature map), 'token+aux_max' (LV-ViT: class-token logits + 0.5 * max over per-token logits).
  pooling: str
  # The token sequence, and a learned position table, have one class token in front.
  class_token: bool
  # 'learned' (a table that fine-tuning resizes in 2D), 'sinusoid' (recomputed from the token count,
  # T2T-ViT: nothing to load or resize), 'none' (a CNN).
  position_embedding: str
  # A pre-logits layer exists (fine-tuning keeps it while it replaces the head).
  representation_layer: bool
  # The model can return per-token logits for dense (token-labeling) losses.
  dense_outputs: bool
  # The model can corrupt its patch embeddings and predict each corrupted patch's mean colour
  # (masked patch prediction, the ViT paper's self-supervised objective): a MaskedPatchOutput.
  masked_patch_prediction: bool = False

  def __post_init__(self):
    if self.pooling not in POOLINGS:
      raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
    if self.position_embedding not in POSITION_EMBEDDINGS:
      raise ValueError(
          f"position_embedding must be one of {POSITION_EMBEDDINGS}, got {self.position_embedding!r}")
