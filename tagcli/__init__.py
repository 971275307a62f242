"""tagcli: score molecules and proteins with a frozen LLM conditioned by learned tags (Tag-LLM)."""

__version__ = "0.1.0"
