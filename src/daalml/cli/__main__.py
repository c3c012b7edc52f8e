"""`python -m daalml.cli` runs the command line."""

from daalml.cli.app import main

main()
