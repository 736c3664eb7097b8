"""One module per model family; each registers itself with `eval.models.registry.register_family`."""
