"""Tag packs: the format, where they are found on this machine, and registries to pull them from."""
