"""`python -m facerec.train ...`: see facerec.train.cli."""

from facerec.train.cli import main

raise SystemExit(main())
