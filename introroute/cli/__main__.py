"""``python -m introroute.cli``."""

import sys

from introroute.cli import main

sys.exit(main())
