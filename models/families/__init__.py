"""One module per model family; each registers itself with `models.registry.register_family`."""
