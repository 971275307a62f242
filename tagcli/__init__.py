"""tagcli: score molecules and proteins with a frozen LLM conditioned by learned tags (Tag-LLM)."""

__version__ = "0.1.0"
__all__ = ["TagScorer", "__version__"]


def __getattr__(name: str):
    # Lazy, so `import tagcli` (and reading __version__) does not pull in torch.
    if name == "TagScorer":
        from tagcli.scoring.scorer import TagScorer

        return TagScorer
    raise AttributeError(f"module 'tagcli' has no attribute {name!r}")
