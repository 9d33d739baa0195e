"""R+ViT hybrids trained from scratch on ImageNet-1k with the ViT paper's ImageNet recipe.

  python -m vit_jax.main --config=configs/hybrid.py:R50+B/16 --workdir=gs-or-local-dir \
      --config.data.data_dir=/path/to/tensorflow_datasets

ViT paper (Dosovitskiy et al. 2021, Table 3, ImageNet rows): Adam(0.9, 0.999), batch 4096, lr 3e-3 with
10k linear warmup steps and cosine decay, weight decay 0.3, dropout 0.1, gradient clipping at global
norm 1, 300 epochs at 224 px. The paper pre-trains its hybrids on ImageNet-21k / JFT; this config applies
its ImageNet-1k ViT recipe to them. Fine-tune at 384 with `--config.init_from=...` and a larger
data.image_size: the position embeddings are resized (grid image_size / total stride).
"""
from vit_jax.configuration import base_config, imagenet_data, small_digits_job

# Short names (as in the public checkpoint names R50_B_16, R26_S_32 ...) -> registry names.
VARIANTS = {
    "R50+B/16": "R50+ViT-B/16",
    "R26+S/32": "R26+ViT-S/32",
    "R26+B/32": "R26+ViT-B/32",
    "R50+L/32": "R50+ViT-L/32",
    "R+Ti/16": "R+ViT-Ti/16",
}


def get_config(variant="R50+B/16"):
  """`variant` picks the size: 'R50+B/16', 'R26+S/32', ... (or the registry name 'R50+ViT-B/16')."""
  if variant == "test":  # R+ViT-testing on the embedded digits, a few steps
    config = base_config("R+ViT-testing")
    small_digits_job(config)
    return config.lock()
  name = VARIANTS.get(variant, variant)
  if name not in VARIANTS.values():
    raise ValueError(f"configs/hybrid.py takes one of {', '.join(VARIANTS)}, got {variant!r}")
  config = base_config(name)
  config.model.dropout_rate = 0.1
  imagenet_data(config)
  config.batch_size = 4096
  config.eval_batch_size = 1024
  config.train.epochs = 300.0
  config.evals.test.every = 5000
  config.optim.name = "adamw"  # the paper's Adam: its official code decays the weights decoupled
  config.optim.b1 = 0.9
  config.optim.b2 = 0.999
  config.optim.learning_rate = 3e-3
  config.optim.warmup_steps = 10_000
  config.optim.decay = "cosine"
  config.optim.weight_decay = 0.3
  config.optim.grad_clip_norm = 1.0
  return config.lock()
