"""``python -m hashgnn ...``: the command-line interface without the installed console script."""

from hashgnn.cli import main

main()
