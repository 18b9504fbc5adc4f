"""``python3 -m fedlearn.sweep``: a grid of runs across the scripts (:mod:`fedlearn.analysis.sweep`)."""

import sys

from .analysis.sweep import main

if __name__ == "__main__":
    sys.exit(main())
