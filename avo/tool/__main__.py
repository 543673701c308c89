"""`python -m avo.tool ...` (and `avo tool ...` inside an agent=cli workspace)."""

import sys

from avo.tool import main

if __name__ == "__main__":
    sys.exit(main())
