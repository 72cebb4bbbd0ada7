"""``python -m hello_service``: the same as the ``hello-service`` command."""

import sys

from hello_service import main

sys.exit(main())
