"""`python -m labcore <verb>`: the command line (labcore.cli)."""
import sys

from labcore.cli import main

if __name__ == "__main__":
    sys.exit(main())
