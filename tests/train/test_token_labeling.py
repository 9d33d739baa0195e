"""Specification of token labeling: dense targets and loss equal the official ones; MixToken box semantics.

tests/fixtures/token_label_targets.npz (docs/fixtures.md#token-label-targets) holds the official
`mixup_target(label_maps_topk, num_classes=10, lam=1.0, smoothing=0.1, label_size=4)` and
`TokenLabelCrossEntropy(dense_weight=0.5, cls_weight=1.0)` values for random logits.
"""
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax import configuration
from vit_jax.data import batch_keys, pipeline, score_maps
from vit_jax.data.sources import ArraySource
from vit_jax.models import create_model
from vit_jax.models.interface import DenseOutput
from vit_jax.train import losses
from vit_jax.train import token_labeling as tl

FIXTURE = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "token_label_targets.npz"


@pytest.fixture(scope="module")
def official():
  with np.load(FIXTURE) as data:
    return {key: data[key] for key in data.files}


def official_layout(targets):
  """TokenLabelTargets -> the official (B, C, 2 + tokens) = [ground truth | cls label | dense labels]."""
  return np.concatenate([targets.ground_truth[:, :, None], targets.cls[:, :, None],
                         np.transpose(targets.dense, (0, 2, 1))], axis=2)


def make_targets(official, lam=1.0, **kwargs):
  build = jax.jit(lambda maps, lam: tl.token_label_targets(
      tl.unpack_official(maps), num_classes=10, label_size=4, smoothing=0.1, lam=lam, **kwargs))
  return build(official["label_maps_topk"], lam)


@pytest.fixture(scope="module")
def targets(official):
  return make_targets(official)


def test_targets_equal_the_official_mixup_target(official, targets):
  got = official_layout(targets)
  np.testing.assert_allclose(got, official["target"], atol=1e-6)


def test_geometric_box_order_differs_only_for_crops_asymmetric_about_the_diagonal(official):
  """Sample 0 has the crop (top, left, h, w) = (0.1, 0.2, 0.5, 0.6); sample 1 is the full image."""
  got = official_layout(make_targets(official, official_box_order=False))
  assert np.abs(got[0] - official["target"][0]).max() > 0.1
  np.testing.assert_allclose(got[1], official["target"][1], atol=1e-6)


def test_roi_align_averages_bilinear_samples_like_torchvision():
  """On a map linear in position, bilinear sampling is exact: each cell is the value at its centre."""
  rows, cols = np.meshgrid(np.arange(6.0), np.arange(6.0), indexing="ij")
  maps = jnp.asarray((10 * rows + cols)[None, :, :, None], jnp.float32)
  box = jnp.array([[1.0, 1.0, 3.0, 3.0]])  # x1, y1, x2, y2
  cells, whole = jax.jit(lambda m, b: (tl.roi_align(m, b, 2), tl.roi_align(m, b, 1)))(maps, box)
  np.testing.assert_allclose(cells[0, :, :, 0], [[16.5, 17.5], [26.5, 27.5]])
  np.testing.assert_allclose(whole[0, 0, 0, 0], 22.0)  # one bin of 2x2 samples: their mean


def test_box_edges_round_like_torch_even_when_compiled():
  """The sample count per bin is ceil(roi / out): one ulp on an edge can change it, so the edges are
  float32(coord * width) - 0.5 exactly, never a fused multiply-add."""
  coords = np.random.RandomState(0).uniform(size=4096).astype(np.float32)
  edges = jax.jit(lambda c: tl._rounded_product(c, 18) - 0.5)(coords)  # pylint: disable=protected-access
  np.testing.assert_array_equal(edges, coords * np.float32(18) - np.float32(0.5))


def test_scores_outside_the_top_k_are_logit_zero():
  values = jnp.full((1, 2, 1, 1), 3.0)
  indices = jnp.array([1.0, 4.0]).reshape(1, 2, 1, 1)
  np.testing.assert_array_equal(tl.dense_logit_maps(values, indices, 5)[0, 0, 0], [0, 3, 0, 0, 3])


def test_loss_equals_the_official_token_label_cross_entropy(official, targets):
  output = DenseOutput(official["out_cls"], official["out_aux"], jnp.zeros(4, jnp.int32))
  loss = tl.TokenLabelCrossEntropy(dense_weight=0.5, cls_weight=1.0)(output, targets)
  np.testing.assert_allclose(loss, official["loss_dense0p5_nomix"], rtol=1e-6)


def test_mixtoken_box_mixes_the_class_target_by_the_kept_token_fraction(official, targets):
  """Box rows 1:3, columns 0:2 of the 4x4 grid: lam' = 1 - 4/16; token targets stay with their image."""
  output = DenseOutput(official["out_cls"], official["out_aux"], jnp.array([1, 0, 3, 2]))
  loss = tl.TokenLabelCrossEntropy(dense_weight=0.5, cls_weight=1.0)(output, targets)
  np.testing.assert_allclose(loss, official["loss_dense0p5_mixbox_1_0_3_2"], rtol=1e-6)
  lam = 0.75
  mixed_cls = lam * targets.cls + (1 - lam) * targets.cls[::-1]
  expected = (np.mean(tl.soft_cross_entropy(output.cls_logits, mixed_cls))
              + 0.5 * np.mean(tl.soft_cross_entropy(output.token_logits, targets.dense)))
  np.testing.assert_allclose(loss, expected, rtol=1e-6)


def test_image_labels_alone_train_every_token_on_its_image_label(official):
  labels = jax.nn.one_hot(jnp.array([3, 7]), 10)
  output = DenseOutput(official["out_cls"], official["out_aux"], jnp.zeros(4, jnp.int32))
  loss = tl.TokenLabelCrossEntropy(dense_weight=1.0)(output, labels)
  expected = (np.mean(tl.soft_cross_entropy(output.cls_logits, labels))
              + np.mean(tl.soft_cross_entropy(output.token_logits, labels[:, None, :])))
  np.testing.assert_allclose(loss, expected, rtol=1e-6)


def test_image_level_lam_mixes_every_target_with_the_reversed_batch(official, targets):
  mixed = make_targets(official, lam=0.3)
  for a, b in zip(targets, mixed):
    np.testing.assert_allclose(b, 0.3 * a + 0.7 * a[::-1], atol=1e-6)


def test_targets_of_the_wrong_grid_are_a_clear_error(official, targets):
  output = DenseOutput(official["out_cls"], official["out_aux"][:, :9], jnp.zeros(4, jnp.int32))
  with pytest.raises(ValueError, match="label_size = the token grid side"):
    tl.TokenLabelCrossEntropy()(output, targets)


def test_lvvit_with_mixtoken_trains_on_token_labels():
  """End to end: the tiny LV-ViT (4x4 tokens) with MixToken, targets from score maps, finite gradients."""
  model = create_model("LV-ViT-test", return_dense=True, mix_token=True)
  rng = np.random.RandomState(0)
  images = rng.normal(size=(4, 32, 32, 3)).astype(np.float32)
  maps = tl.ScoreMaps(values=rng.normal(size=(4, 5, 6, 6)), indices=rng.randint(0, 10, (4, 5, 6, 6)),
                      crop=np.tile([0.1, 0.2, 0.5, 0.6], (4, 1)), ground_truth=np.arange(4))

  def loss_fn(params, batch_stats):
    targets = tl.token_label_targets(maps, num_classes=10, label_size=4)
    output, _ = model.apply({"params": params, "batch_stats": batch_stats}, images, train=True,
                            mutable=["batch_stats"], rngs={"dropout": jax.random.key(3)})
    return tl.TokenLabelCrossEntropy()(output, targets)

  abstract = nn.unbox(jax.eval_shape(lambda: model.init(jax.random.key(0), images[:1])))
  variables = jax.tree.map(lambda leaf: np.abs(0.1 * rng.normal(size=leaf.shape)).astype(np.float32),
                           abstract)  # positive, so BatchNorm variances are valid
  loss, grads = jax.jit(jax.value_and_grad(loss_fn))(variables["params"], variables["batch_stats"])
  assert np.isfinite(float(loss))
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
  assert np.abs(grads["aux_head"]["kernel"]).max() > 0


def official_batch(official, directory):
  """The train batch the pipeline makes from the fixture's maps stored as score-map shards and its
  crops (unmirrored), joined by example key as in training."""
  maps = tl.unpack_official(np.asarray(official["label_maps_topk"]))
  manifest = score_maps.Manifest(source="fixture", split="train", num_classes=10, top_k=5,
                                 grid=(6, 6), examples=2, shards=1, value_dtype="float32")
  score_maps.start(str(directory), manifest)
  score_maps.write_shard(str(directory), manifest, 0, ["a", "b"], maps.values, maps.indices)
  batch = {"label": maps.ground_truth, score_maps.EXAMPLE_KEY: np.array([b"a", b"b"], object),
           batch_keys.BOX: maps.crop, batch_keys.FLIPPED: np.zeros(2, bool)}
  return score_maps.join(batch, score_maps.load(str(directory)))


@pytest.mark.parametrize("box, expected", [((0, 0, 0, 0), "loss_dense0p5_nomix"),
                                           ((1, 0, 3, 2), "loss_dense0p5_mixbox_1_0_3_2")])
def test_the_registered_loss_on_a_batch_of_the_official_maps_gives_the_official_loss(
    official, box, expected, tmp_path):
  loss_fn = losses.get_loss("token_label")
  assert losses.takes_dense_outputs(loss_fn)
  output = DenseOutput(official["out_cls"], official["out_aux"], jnp.array(box))
  batch = official_batch(official, tmp_path)
  per_example = jax.jit(lambda o, b: loss_fn(o, b, label_smoothing=0.1))(output, batch)
  assert per_example.shape == (2,)
  np.testing.assert_allclose(jnp.mean(per_example), official[expected], rtol=1e-6)


def test_a_batch_without_score_maps_is_an_error_naming_what_is_missing(official):
  output = DenseOutput(official["out_cls"], official["out_aux"], jnp.zeros(4, jnp.int32))
  with pytest.raises(ValueError, match=r"score maps in the train batch, which has no \['score_values'"):
    losses.get_loss("token_label")(output, {"label": jnp.zeros(2, jnp.int32)}, label_smoothing=0.1)


def test_a_mirrored_images_dense_targets_are_its_unmirrored_targets_mirrored(official, tmp_path):
  batch = official_batch(official, tmp_path)
  mirrored = dict(batch)  # what the join makes of the same crops shown mirrored
  mirrored[tl.SCORE_VALUES] = batch[tl.SCORE_VALUES][..., ::-1]
  mirrored[tl.SCORE_INDICES] = batch[tl.SCORE_INDICES][..., ::-1]
  mirrored[tl.CROP] = score_maps.flip_first_crop(batch[tl.CROP], [True, True])

  @jax.jit  # one compilation costs less than the first eager dispatch of every op
  def dense(b):
    maps = tl.ScoreMaps(b[tl.SCORE_VALUES], b[tl.SCORE_INDICES], b[tl.CROP], b["label"])
    return tl.token_label_targets(maps, num_classes=10, label_size=4,
                                  official_box_order=False).dense.reshape(2, 4, 4, 10)
  np.testing.assert_allclose(dense(mirrored), dense(batch)[:, :, ::-1], atol=1e-6)


@pytest.fixture(scope="module")
def ramp(tmp_path_factory):
  """16 images whose red channel is 4 x (source column) and green 4 x (source row), and their maps,
  whose top class at cell (i, j) of an 8x8 grid is 8 i + j; a data config training on both."""
  n, directory = 16, tmp_path_factory.mktemp("ramp_maps")
  rows, cols = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
  image = np.stack([4 * cols, 4 * rows, np.zeros_like(rows)], axis=-1).astype(np.uint8)
  source = ArraySource("ramp", np.repeat(image[None], n, axis=0), np.zeros(n, np.int32), 64,
                       {"train": np.arange(n)})
  manifest = score_maps.Manifest(source="ramp", split="train", num_classes=64, top_k=1, grid=(8, 8),
                                 examples=n, shards=1)
  score_maps.start(str(directory), manifest)
  cells = (8 * np.arange(8)[:, None] + np.arange(8)[None, :])[None, None]  # (1, 1, 8, 8)
  score_maps.write_shard(str(directory), manifest, 0, [f"ramp/train#{i}" for i in range(n)],
                         np.full((n, 1, 8, 8), 10.0), np.repeat(cells, n, axis=0))
  data = configuration.data_config()
  data.update(source="ramp", pp_train="decode", score_maps=str(directory),
              pp_batch="inception_crop(16, area_min=0.2)|flip_lr")
  return source, data


def test_dense_targets_follow_the_pipelines_crops_and_flips(ramp):
  """Through the train pipeline (random crops and flips) and the loss's targets, every token's
  target class names the source cell that the token's pixels show."""
  source, data = ramp
  n = source.num_examples("train")
  batch = next(pipeline.train_batches(data, source=source, batch_size=n, image_size=16, seed=3))
  maps = tl.ScoreMaps(batch[tl.SCORE_VALUES], batch[tl.SCORE_INDICES], batch[tl.CROP], batch["label"])
  dense = jax.jit(lambda m: tl.token_label_targets(m, num_classes=64, label_size=4, smoothing=0.0,
                                                   official_box_order=False).dense)(maps)
  target_cell = np.argmax(dense, axis=-1).reshape(n, 4, 4)
  target_row, target_col = (target_cell // 8 + 0.5) * 4, (target_cell % 8 + 0.5) * 4  # in pixels
  shown = batch["image"].reshape(n, 4, 4, 4, 4, 3).mean(axis=(2, 4)) / 4  # each token's mean pixel
  mirrored = shown[:, 0, 0, 0] > shown[:, 0, -1, 0]
  assert 0 < mirrored.sum() < n
  # Within a map cell and a half (4 px cells; a wrong flip is off by up to 28 px).
  assert np.abs(shown[..., 0] - target_col).max() <= 3.0
  assert np.abs(shown[..., 1] - target_row).max() <= 3.0


def test_warped_crops_take_their_token_targets_from_where_each_token_came_from():
  """warp_grid on a 4x4 grid: each token reads the cell its centre comes from; outside, logit 0."""
  grid = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3) + 1
  identity = np.float32([1, 0, 0, 0, 1, 0])
  right = np.float32([1, 0, -0.25, 0, 1, 0])   # content moved one token to the right
  half_turn = np.float32([-1, 0, 1, 0, -1, 1])  # rotated by 180 degrees about the centre
  np.testing.assert_array_equal(tl.warp_grid(grid, np.stack([identity, half_turn])),
                                np.stack([grid[0], grid[1, ::-1, ::-1]]))
  moved = tl.warp_grid(grid, np.stack([right, right]))
  np.testing.assert_array_equal(moved[:, :, 1:], grid[:, :, :-1])
  np.testing.assert_array_equal(moved[:, :, 0], 0.0)


def test_the_loss_reads_the_batchs_warp(official, tmp_path):
  batch = official_batch(official, tmp_path)
  output = DenseOutput(official["out_cls"], official["out_aux"], jnp.zeros(4, jnp.int32))
  loss_fn = jax.jit(lambda b: losses.get_loss("token_label")(output, b, label_smoothing=0.1))
  plain = loss_fn(batch)
  unwarped = loss_fn({**batch, batch_keys.WARP: np.tile(np.float32([1, 0, 0, 0, 1, 0]), (2, 1))})
  turned = loss_fn({**batch, batch_keys.WARP: np.tile(np.float32([-1, 0, 1, 0, -1, 1]), (2, 1))})
  np.testing.assert_allclose(unwarped, plain, rtol=1e-6)
  assert np.abs(np.asarray(turned) - np.asarray(plain)).max() > 1e-3


def test_a_resumed_stream_carries_the_same_maps_and_geometry(ramp):
  source, data = ramp
  stream = pipeline.train_batches(data, source=source, batch_size=8, image_size=16, seed=3)
  third = [next(stream) for _ in range(3)][-1]
  resumed = next(pipeline.train_batches(data, source=source, batch_size=8, image_size=16, seed=3,
                                        start_step=2))
  assert set(resumed) == set(third)
  for key in resumed:
    np.testing.assert_array_equal(resumed[key], third[key])
