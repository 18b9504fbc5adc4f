"""Imported first by the ``--workers`` fork server (its preload, before torch): Ctrl-C reaches the whole process
group, and the fork server would print a traceback if it came while it imports torch. It ignores SIGINT, as the
workers it forks do (:func:`.pool._worker_main`): the server decides when they stop."""

import signal

signal.signal(signal.SIGINT, signal.SIG_IGN)
