"""`python -m tagcli ...` (also what `accelerate launch -m tagcli predict ...` runs in each process)."""

from tagcli.cli import main

if __name__ == "__main__":
    main()
