"""``python -m world_service``: the same as the ``world-service`` command."""

import sys

from world_service import main

sys.exit(main())
