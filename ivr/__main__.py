"""Allow `python -m ivr` as a synonym for the `hotline` command."""

from ivr.cli import main

raise SystemExit(main())
