"""The ViT paper's Figure 7 analyses of a trained ViT, and the command that draws them.

  filters.py              principal components of the patch-embedding filters
  position_similarity.py  cosine similarity between position embeddings
  attention.py            mean attention distance per head; attention rollout
  readout.py              what these read from a ViT (kernel, position table, attention weights)
  report.py               all of them for one model: analysis.npz, analysis.json and the figures
  plots.py                the PNG figures (matplotlib)
  command.py              python -m vit_jax.analysis
The numeric modules (filters, position_similarity, attention) import neither matplotlib nor flax.
"""
