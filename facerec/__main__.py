"""`python -m facerec ...`: the same as the `facerec` command."""

from facerec.cli import main

main()
