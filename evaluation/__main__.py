"""``python -m evaluation`` = the ``evaluate`` command."""

from evaluation.cli import main

main()
