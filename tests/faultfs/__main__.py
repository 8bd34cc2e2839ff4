"""``python -m tests.faultfs SOURCE MOUNTPOINT --control PATH``: see :mod:`tests.faultfs.server`."""

import sys

from tests.faultfs.server import main

sys.exit(main())
