"""Names of the entries a train or eval batch can carry besides 'image', 'label' and 'mask'.

Kept apart from the modules that fill them (pipeline, geometry, score_maps) so that the step's
losses can name them without importing TensorFlow.
"""
# Each example's key in its source (pipeline batches with keys=True, and score-map joins).
EXAMPLE_KEY = "example_key"
# The augmentation's geometry (data/geometry.py): float32 (B, 4) (top, left, height, width) of the
# source image as fractions, bool (B,) mirrored left-right, and float32 (B, 6) the affine map from
# the image to the crop it was warped from (RandAugment's rotate, shear, translate).
BOX, FLIPPED, WARP = "crop_box", "flipped", "warp"
# A joined teacher's score map (data/score_maps.py): top-k logits and class ids (B, K, H', W'), and
# the crop (B, 4) in the official flip-then-crop convention.
SCORE_VALUES, SCORE_INDICES, CROP = "score_values", "score_indices", "crop"
