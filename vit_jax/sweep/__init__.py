"""Hyper-parameter sweeps: a sweep file's trials run as trainer processes, gathered into one table
and plots (`python -m vit_jax.sweep`; see __main__.py). Nothing here imports jax: a sweep file is
also the trainer's config file, which must load without it."""
