"""The `tagcli` command line: thin Typer commands over the library API."""
