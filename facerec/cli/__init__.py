"""facerec's front end on the command line: `facerec.cli.main` is the console script's entry point."""

from facerec.cli.main import app, main

__all__ = ["app", "main"]
