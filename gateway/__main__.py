"""`python -m gateway serve ...`."""

import sys

from gateway.command import main

sys.exit(main())
