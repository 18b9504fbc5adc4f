#!/usr/bin/env python3
"""Centralized training on the whole training set (the reference)."""

import sys

from fedlearn.app import main

if __name__ == "__main__":
    sys.exit(main("run_baseline"))
