"""Our safetensors export against real timm: timm's model of the same architecture loads each file with
load_state_dict(strict=True), and its logits are compared with our JAX model's on the same images.

Two stages in two environments (timm and torch stay out of the project's):
  python experiments/export_timm_check.py export /tmp/timm_check            # the project's venv
  python3 -m venv /tmp/venv_timm
  /tmp/venv_timm/bin/pip install torch==2.14.1 torchvision==0.29.1 timm==1.0.31 numpy safetensors
  /tmp/venv_timm/bin/python experiments/export_timm_check.py timm /tmp/timm_check   # prints the table

The export stage writes, per case, the .safetensors (vit_jax.export.timm_safetensors), the images,
our logits and the model's fields. The timm stage builds timm's model from those fields with the
constructor options docs/export.md lists, with timm's numerics knobs (GELU form, GroupNorm and
weight-standardization epsilons) set to the model's where timm has them.
"""
import functools
import json
import os
import pathlib
import sys

# (case, model name, model fields): our default numerics, and the hybrid also with timm's.
CASES = [
    ("vit_token", "ViT-micro/4", {}),
    ("vit_gap_exact_gelu", "ViT-micro/4", {"classifier": "gap", "gelu_approximate": False}),
    ("bit", "BiT-testing", {}),
    ("hybrid_official_numerics", "R+ViT-testing", {}),
    ("hybrid_timm_numerics", "R+ViT-testing", {
        "group_norm_epsilon": 1e-5, "weight_std_epsilon": 1e-8, "weight_std_form": "sqrt_var",
        "gelu_approximate": False}),
    ("tnt", "TNT-test", {}),
]
NUM_CLASSES = 10


def export_stage(out: pathlib.Path) -> None:
  """Writes CASE.safetensors and CASE.npz (images NCHW, our logits, the model's fields as JSON)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
  from export_parity import trained_for  # pylint: disable=g-import-not-at-top
  from vit_jax.export import model_card, timm_safetensors  # pylint: disable=g-import-not-at-top
  out.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(0)
  for case, name, fields in CASES:
    trained = trained_for(name, fields)
    timm_safetensors.save_safetensors(trained, out / f"{case}.safetensors")
    size = trained.image_size
    images = rng.uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
    logits = np.asarray(jax.jit(lambda x, t=trained: t.model.apply(t.variables, x, train=False))(images))
    spec = {"model_name": name, "family": type(trained.model).__name__,
            "fields": model_card.model_fields(trained.model)}
    np.savez(out / f"{case}.npz", images_nchw=images.transpose(0, 3, 1, 2), logits=logits,
             spec=np.array(json.dumps(spec)))
    print(f"{case}: wrote {out / case}.safetensors")


def timm_model(spec: dict):
  """timm's model for our fields (the constructions of tests/fixtures/make_timm_*_fixtures.py)."""
  from timm.layers import GroupNormAct, HybridEmbed, StdConv2d, StdConv2dSame  # pylint: disable=g-import-not-at-top
  from timm.models.resnetv2 import ResNetV2, create_resnetv2_stem  # pylint: disable=g-import-not-at-top
  from timm.models.tnt import TNT  # pylint: disable=g-import-not-at-top
  from timm.models.vision_transformer import VisionTransformer  # pylint: disable=g-import-not-at-top
  f, family = spec["fields"], spec["family"]
  if family == "TransformerInTransformer":
    assert f["inner_mlp_ratio"] == 4.0 and not f["gelu_approximate"]  # timm's inner MLP is 4x, exact GELU
    return TNT(img_size=f["image_size"], patch_size=f["patch_size"], first_stride=f["inner_stride"],
               embed_dim=f["outer_dim"], inner_dim=f["inner_dim"], depth=f["num_layers"],
               num_heads_outer=f["outer_num_heads"], num_heads_inner=f["inner_num_heads"],
               mlp_ratio=f["outer_mlp_ratio"], num_classes=f["num_classes"], qkv_bias=False,
               global_pool="token").eval()
  width = int(64 * f.get("resnet_width_factor", 1))
  channels = tuple(4 * width * 2 ** i for i in range(len(f.get("resnet_layers", ()))))
  norm = functools.partial(GroupNormAct, num_groups=f.get("num_groups"),
                           eps=f.get("group_norm_epsilon"))
  if family == "ResNetV2":
    assert f.get("weight_std_form", "sqrt_var") == "sqrt_var"  # timm StdConv2d: (w - mean) / sqrt(var + eps)
    return ResNetV2(layers=f["resnet_layers"], channels=channels, stem_chs=width,
                    num_classes=f["num_classes"], stem_type="fixed", preact=True, norm_layer=norm,
                    conv_layer=functools.partial(StdConv2d, eps=f["weight_std_epsilon"])).eval()
  vit = dict(img_size=f["image_size"], patch_size=f["patch_size"], embed_dim=f["hidden_size"],
             depth=f["num_layers"], num_heads=f["num_heads"], mlp_ratio=f["mlp_dim"] / f["hidden_size"],
             num_classes=f["num_classes"], qkv_bias=True,
             act_layer="gelu_tanh" if f["gelu_approximate"] else "gelu")
  if f["classifier"] == "token":
    vit.update(class_token=True, global_pool="token")
  else:
    vit.update(class_token=False, global_pool="avg", fc_norm=False)
  if family == "HybridVisionTransformer":
    # timm has no (w - mean) / (std + eps) form: for weight_std_form='std' the export rewrites the
    # kernels for timm's StdConv2dSame at its usual eps 1e-8 (vit_jax/export/timm_kernels.py).
    eps = 1e-8 if f["weight_std_form"] == "std" else f["weight_std_epsilon"]
    conv = functools.partial(StdConv2dSame, eps=eps)
    if f["resnet_layers"]:
      backbone = ResNetV2(layers=f["resnet_layers"], channels=channels, stem_chs=width, num_classes=0,
                          global_pool="", stem_type="same", preact=False, norm_layer=norm,
                          conv_layer=conv)
    else:
      backbone = create_resnetv2_stem(3, width, stem_type="same", preact=False, conv_layer=conv,
                                      norm_layer=norm)
    vit["embed_layer"] = functools.partial(HybridEmbed, backbone=backbone)
  return VisionTransformer(**vit).eval()


def timm_stage(out: pathlib.Path) -> None:
  import numpy as np  # pylint: disable=g-import-not-at-top
  import safetensors.torch  # pylint: disable=g-import-not-at-top
  import timm  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  print(f"timm {timm.__version__}, torch {torch.__version__}")
  print("| case | our model | timm class | strict load | max abs logit | max abs diff |")
  print("|---|---|---|---|---|---|")
  for case, _, _ in CASES:
    with np.load(out / f"{case}.npz") as data:
      spec, images, ours = json.loads(str(data["spec"])), data["images_nchw"], data["logits"]
    model = timm_model(spec)
    model.load_state_dict(safetensors.torch.load_file(out / f"{case}.safetensors"), strict=True)
    with torch.no_grad():
      theirs = model(torch.from_numpy(images)).numpy()
    print(f"| {case} | {spec['model_name']} | {type(model).__name__} | ok | "
          f"{np.abs(ours).max():.3g} | {np.abs(theirs - ours).max():.2g} |")


if __name__ == "__main__":
  if len(sys.argv) != 3 or sys.argv[1] not in ("export", "timm"):
    sys.exit(__doc__)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  {"export": export_stage, "timm": timm_stage}[sys.argv[1]](pathlib.Path(sys.argv[2]))
