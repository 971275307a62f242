"""Built-in tag packs, one folder each (see tagcli/pack.py for the format)."""
