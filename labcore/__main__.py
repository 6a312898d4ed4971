"""`python -m labcore <verb>`: the command line (labcore.cli)."""
import sys

from labcore.cli import main

sys.exit(main())
