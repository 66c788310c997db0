"""``python -m evaluation`` = the ``evaluate`` command."""

from defectkit.evaluation.cli import main

main()
