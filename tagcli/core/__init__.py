"""The model core: prompt layout, tagged model, heads, input cleaning and batching (no I/O, no training)."""
