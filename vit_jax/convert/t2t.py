"""The official T2T-ViT (yitu-opensource/T2T-ViT models/t2t_vit.py) state dict -> our T2TViT variables.

Released checkpoints were built with qk_scale = embed_dim^-0.5: convert and create them with
attention_scale='embed_dim'. The Performer matrices `tokens_to_token.attention{1,2}.w` go to the
'constants' collection (use from_torch_variables); `pos_embed` is the fixed sinusoid table, which our
model recomputes, so it is reported as unused.
"""
from vit_jax.convert.core import Rule, Transform, identity, linear_kernel
from vit_jax.models.t2t import CONSTANTS, T2TViT


def _fused_qkv_kernel(part: int, num_heads: int) -> Transform:
  """Fused qkv Linear weight (3*D, D), rows [q; k; v] -> one of them as a (D, heads, head_dim) kernel."""
  return lambda w: w.reshape(3, -1, w.shape[1])[part].T.reshape(w.shape[1], num_heads, -1)


def _out_kernel(num_heads: int) -> Transform:
  """Attention proj Linear weight (D, heads*head_dim) -> (heads, head_dim, D) kernel."""
  return lambda w: w.T.reshape(num_heads, -1, w.shape[0])


def _layer_norm(ours: str, theirs: str) -> list[Rule]:
  return [Rule(f"{ours}/scale", f"{theirs}.weight", identity),
          Rule(f"{ours}/bias", f"{theirs}.bias", identity)]


def _dense(ours: str, theirs: str, bias: bool = True) -> list[Rule]:
  rules = [Rule(f"{ours}/kernel", f"{theirs}.weight", linear_kernel)]
  return rules + [Rule(f"{ours}/bias", f"{theirs}.bias", identity)] if bias else rules


def _t2t_layer_rules(model: T2TViT, index: int) -> list[Rule]:
  ours, theirs = f"tokens_to_token/attention{index}", f"tokens_to_token.attention{index}"
  rules = _layer_norm(f"{ours}/norm1", f"{theirs}.norm1") + _layer_norm(
      f"{ours}/norm2", f"{theirs}.norm2")
  if model.tokens_type == "performer":  # kqv rows are [k; q; v], with bias; MLP is a Sequential.
    return rules + [
        *_dense(f"{ours}/kqv", f"{theirs}.kqv"), *_dense(f"{ours}/proj", f"{theirs}.proj"),
        *_dense(f"{ours}/mlp/Dense_0", f"{theirs}.mlp.0"),
        *_dense(f"{ours}/mlp/Dense_1", f"{theirs}.mlp.2"),
        Rule(f"{ours}/w", f"{theirs}.w", identity, collection=CONSTANTS)]
  return rules + [  # transformer: qkv rows are [q; k; v], no bias.
      *_dense(f"{ours}/qkv", f"{theirs}.attn.qkv", bias=False),
      *_dense(f"{ours}/proj", f"{theirs}.attn.proj"),
      *_dense(f"{ours}/mlp/Dense_0", f"{theirs}.mlp.fc1"),
      *_dense(f"{ours}/mlp/Dense_1", f"{theirs}.mlp.fc2")]


def t2t_rules(model: T2TViT, keys: set[str]) -> list[Rule]:
  """Official T2T-ViT names -> ours (ARCHITECTURES.md section 8.2 lists the official keys)."""
  performer_keys = any(k.endswith(".kqv.weight") for k in keys if k.startswith("tokens_to_token."))
  transformer_keys = any(k.endswith(".attn.qkv.weight") for k in keys
                         if k.startswith("tokens_to_token."))
  if (model.tokens_type == "performer" and transformer_keys) or (
      model.tokens_type == "transformer" and performer_keys):
    other = "transformer" if transformer_keys else "performer"
    raise ValueError(
        f"the state dict has a {other} T2T module but the model is tokens_type="
        f"{model.tokens_type!r}; use a T2T-ViT{'_t' if other == 'transformer' else ''}-* name "
        f"or pass tokens_type={other!r}")
  heads = model.num_heads
  rules = [*_t2t_layer_rules(model, 1), *_t2t_layer_rules(model, 2),
           *_dense("tokens_to_token/project", "tokens_to_token.project"),
           Rule("cls", "cls_token", identity)]
  for i in range(model.num_layers):
    ours, theirs = f"Transformer/encoderblock_{i}", f"blocks.{i}"
    attn = f"{ours}/MultiHeadDotProductAttention_0"
    rules += _layer_norm(f"{ours}/LayerNorm_0", f"{theirs}.norm1")
    rules += [Rule(f"{attn}/{name}/kernel", f"{theirs}.attn.qkv.weight", _fused_qkv_kernel(part, heads))
              for part, name in enumerate(("query", "key", "value"))]
    rules += [Rule(f"{attn}/out/kernel", f"{theirs}.attn.proj.weight", _out_kernel(heads)),
              Rule(f"{attn}/out/bias", f"{theirs}.attn.proj.bias", identity)]
    rules += _layer_norm(f"{ours}/LayerNorm_1", f"{theirs}.norm2")
    rules += _dense(f"{ours}/MlpBlock_0/Dense_0", f"{theirs}.mlp.fc1")
    rules += _dense(f"{ours}/MlpBlock_0/Dense_1", f"{theirs}.mlp.fc2")
  rules += _layer_norm("Transformer/encoder_norm", "norm")
  rules += _dense("head", "head")
  return rules


CONVERTERS = {T2TViT: t2t_rules}
