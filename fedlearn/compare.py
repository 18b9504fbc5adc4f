"""``python3 -m fedlearn.compare``: runs side by side (:mod:`fedlearn.analysis.compare`)."""

import sys

from .analysis.compare import main

if __name__ == "__main__":
    sys.exit(main())
