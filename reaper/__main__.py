"""`python -m reaper --once [--dry-run]`: see reaper.once."""

import sys

from .once import main

sys.exit(main())
