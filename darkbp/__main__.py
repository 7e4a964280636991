"""`python -m darkbp` runs the `darkbp` command."""

from darkbp.cli import main

main()
