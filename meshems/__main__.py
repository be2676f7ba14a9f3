"""`python -m meshems` runs the meshems command."""

from meshems.cli import main

raise SystemExit(main())
