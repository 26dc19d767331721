"""`python -m gateway serve ...`."""

import sys

from gateway.cli import main

sys.exit(main())
