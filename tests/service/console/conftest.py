"""The console's tests use the service's in-process harness (``tests/service/served.py``)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
