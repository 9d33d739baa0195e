"""Noisy Student self-training (Xie et al. 2020) on the embedded digits, with most labels hidden.

The labelled data are the first 10% of the digits' train split ('train[:10%]': 144 images), the
unlabelled data the other 90% ('train[10%:]': 1294 images, labels unused); every model is tested on
the same 359 test images. `teacher` trains on the labelled images only; `student` (the same ViT plus
noise: RandAugment, dropout, stochastic depth) on them plus a teacher's pseudo-labels, given as
--config.data.pseudo_labels; then the student labels again and a new student trains (W: any directory):

  python -m vit_jax.main --config=configs/noisy_student.py:teacher --workdir=W/teacher
  python -m vit_jax.pseudo_labels --config=configs/noisy_student.py:teacher --teacher=W/teacher \
      --output=W/labels_1 --per_class=130
  python -m vit_jax.main --config=configs/noisy_student.py:student --workdir=W/student_1 \
      --config.data.pseudo_labels=W/labels_1
  python -m vit_jax.pseudo_labels --config=configs/noisy_student.py:student --teacher=W/student_1 \
      --output=W/labels_2 --per_class=130
  python -m vit_jax.main --config=configs/noisy_student.py:student --workdir=W/student_2 \
      --config.data.pseudo_labels=W/labels_2

experiments/noisy_student.py runs all of it with baselines; figures in experiments/README.md.
"""
from vit_jax.configuration import base_config

IMAGE_SIZE = 16
LABELED, UNLABELED = "train[:10%]", "train[10%:]"
# RandAugment runs on the upscaled 16 px image (on the 8x8 digit one pixel is an eighth of it). At
# magnitude 3 it rotates up to 9 degrees, shears up to 0.09 and shifts by 2 px (13% of 16 px,
# round(0.45 * 3/10 * 16)), which leaves a digit the same digit; at 10 (the paper's scale) a shift
# is 7 px, half the image, filled with gray. Solarize at 3 inverts values >= 179 (the strongest
# strokes): noise a digit survives as its outline.
RANDAUG_MAGNITUDE = 3


def get_config(stage="teacher"):
  config = base_config("ViT-tiny/4")
  config.data.source = "digits"
  config.data.image_size = IMAGE_SIZE
  config.data.train_split = LABELED
  config.data.unlabeled_split = UNLABELED
  config.data.test_split = "test"
  config.batch_size = 64
  config.eval_batch_size = 256
  config.optim.name = "adamw"
  config.optim.learning_rate = 3e-3
  config.optim.warmup_steps = 30
  config.optim.weight_decay = 0.05
  config.train.log_every = 50
  config.train.checkpoint_every = 1000
  config.train.keep_checkpoints = 1
  # Whole-batch crop for the in-memory 8x8 digits, as configs/default.py (no flip: a mirrored digit
  # is another glyph).
  config.data.pp_batch = (f"inception_crop({IMAGE_SIZE}, area_min=0.8)|value_range(-1, 1)")
  if stage == "teacher":
    config.train.steps = 400
    config.data.pp_train = "decode"
    config.model.dropout_rate = 0.0
  elif stage == "student":
    # Equal in size to the teacher (the paper's students are equal or larger), with the paper's
    # noise: RandAugment; dropout (the paper's 0.5 is on the final layer, which this ViT has none
    # of: here it is the blocks' dropout); stochastic depth with survival 0.8 at the last block,
    # linear in depth (drop rate 0.2).
    config.train.steps = 600
    config.data.pp_train = f"decode|resize({IMAGE_SIZE})|randaug(2, {RANDAUG_MAGNITUDE})"
    config.model.dropout_rate = 0.1
    config.model.stochastic_depth = 0.2
    # Each labelled image twice per epoch among the ~1300 pseudo-labelled rows: about 1 labelled to
    # 4.5 pseudo-labelled (the paper's batches hold up to 14 unlabelled per labelled image).
    config.data.labeled_repeats = 2
  else:
    raise ValueError(f"configs/noisy_student.py takes 'teacher' or 'student', got {stage!r}")
  return config.lock()
