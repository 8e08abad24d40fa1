"""`python -m earthsim` (and `torchrun -m earthsim`) run the command-line interface."""

from earthsim.cli import main

raise SystemExit(main())
