"""``python -m giftflow`` runs the command line."""

from giftflow.cli import main

main()
