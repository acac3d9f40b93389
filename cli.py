"""`python cli.py ...` from a source checkout: the same as the installed `facerec` command."""

from facerec.cli import main

if __name__ == "__main__":
    main()
