"""``python -m inference_service``."""

import sys

from inference_service import main

sys.exit(main())
