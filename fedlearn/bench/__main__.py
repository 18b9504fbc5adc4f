"""``python3 -m fedlearn.bench``: the benchmark (:mod:`fedlearn.bench`)."""

import sys

from . import main

sys.exit(main())
