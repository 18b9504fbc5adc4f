#!/usr/bin/env python3
"""Synchronous FedAvg with a fresh random client selection every round."""

import sys

from fedlearn.app import main

if __name__ == "__main__":
    sys.exit(main("run_federated"))
