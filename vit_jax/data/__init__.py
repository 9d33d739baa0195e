"""Input pipelines: sources, preprocessing ops and per-host batching.

  defaults.py     every key of config.data with its default (no TensorFlow: configs load anywhere)
  sources.py      the Source interface and registry; digits, image folders, TFDS by name
  imagenet21k.py  TFDS builder for the ImageNet-21k release (python -m vit_jax.data.imagenet21k)
  jft.py          JFT-like multi-label TFRecord shards: format, writer, reader
  jft_write.py    the writer command (python -m vit_jax.data.jft_write)
  preprocess.py   per-example ops: decode, crops, resize, flip, value range, one-hot/multi-hot
  randaugment.py  RandAugment; mixing.py: mixup, cutmix and one of them per batch (batch ops)
  pp.py           pipelines as strings: 'decode|inception_crop(224)|flip_lr|value_range(-1, 1)'
  guard.py        bad data: undecodable examples skipped and counted, unreadable shards named
  pipeline.py     per-process train batches (pure function of (seed, step)) and masked eval passes
"""
