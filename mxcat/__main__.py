"""``python -m mxcat`` runs the command line."""

from mxcat.cli import main

main()
