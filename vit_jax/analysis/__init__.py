"""The ViT paper's Figure 7 analyses of a trained ViT.

  filters.py              principal components of the patch-embedding filters
  position_similarity.py  cosine similarity between position embeddings
  attention.py            mean attention distance per head; attention rollout
These numeric modules import neither matplotlib nor flax.
"""
