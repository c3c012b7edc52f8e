"""`python -m daalml` runs the command line."""

from daalml.cli import main

main()
