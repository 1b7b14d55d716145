"""``python -m audit`` is ``python -m audit.verify``."""

import sys

from audit.verify import main

sys.exit(main())
