from __future__ import annotations

import sys

from heatctl.cli import main

sys.exit(main())
