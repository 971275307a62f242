"""Tag packs: the format, where they are found on this machine, and registries to pull them from.

format      the pack format: TagPack, load/validate/save
manifest    the manifest schema and validation (the one manifest reader)
archive     `.tagpack` archives: writing, and extracting only what every header check allows
limits      caps on what a pack may make tagcli read, and checks of untrusted JSON
messages    untrusted values quoted in one short line
store       where a pack NAME is found on this machine, and a function's sibling domain packs
index       a registry's index.json and its entries
registries  the kinds of registries (hf://, URLs, folders) and which are configured
transport   reading URLs, resumable downloads, archive integrity checks
integrity   file hashes; a pulled pack's files against its install record (checked at every load)
install     resolving, pulling and removing packs; predict's auto-pull
listing     list, info, verify and export
"""
