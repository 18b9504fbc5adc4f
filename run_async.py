#!/usr/bin/env python3
"""Asynchronous federated learning (FedAsync, FedBuff) on a deterministic virtual clock."""

import sys

from fedlearn.app import main

if __name__ == "__main__":
    sys.exit(main("run_async"))
