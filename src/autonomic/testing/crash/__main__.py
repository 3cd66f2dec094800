"""``python -m autonomic.testing.crash --db URL -n N --seed S``: run crash trials, print the report."""

import sys

from autonomic.testing.crash.report import main

if __name__ == "__main__":
    sys.exit(main())
