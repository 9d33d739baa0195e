"""Input pipelines: sources, preprocessing ops and per-host batching."""
