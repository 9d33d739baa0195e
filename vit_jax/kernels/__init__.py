"""Backend kernels, each loaded only when a model option chooses it (attention_impl 'cpu' or 'pallas',
or 'auto' where it picks one, imports its module inside the attention call). Model code never imports
this package at module level."""
