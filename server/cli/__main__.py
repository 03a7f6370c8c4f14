"""`python -m emberd.server.cli`: the `emberd` command without its script."""

import sys

from emberd.server.cli.main import main

sys.exit(main())
