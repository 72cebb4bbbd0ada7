"""``python -m service_template``: the same as the ``service-template`` command."""

import sys

from . import main

sys.exit(main())
