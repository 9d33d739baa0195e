"""Backend kernels, each loaded only when a model option chooses it (attention_impl='cpu' imports
cpu_attention inside the attention call). Model code never imports this package at module level."""
