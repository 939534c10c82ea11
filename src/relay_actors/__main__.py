"""Run the command line as `python -m relay_actors`."""

from relay_actors.cli import main

raise SystemExit(main())
