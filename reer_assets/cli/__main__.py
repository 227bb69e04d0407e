"""``python -m reer_assets.cli``: the `reer` command."""

import sys

from reer_assets.cli.main import main

sys.exit(main())
