"""Exceptions that end a run with a one-line message and a chosen exit status, and the parser that does the same."""

import argparse
from typing import NoReturn


class FedlearnError(Exception):
    """An expected failure: printed as one line, exits with ``exit_code``."""

    exit_code = 1


class UsageError(FedlearnError):
    """A bad flag value or combination (exit status 2, like argparse)."""

    exit_code = 2


class DataError(FedlearnError):
    """A dataset or checkpoint that is missing, unreadable or corrupt (exit status 1)."""

    exit_code = 1


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (no usage dump) with exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")
