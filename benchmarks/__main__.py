"""``python -m benchmarks all`` (or one name); see benchmarks/run_all.py."""

import sys

from benchmarks.run_all import main

sys.exit(main())
