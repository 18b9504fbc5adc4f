"""fedlearn: centralized, synchronous federated and asynchronous federated training side by side.

``fedlearn.run(script, **flags)`` runs what ``script`` (``run_baseline``, ``run_federated``, ``run_async``) would
with the command line's flags as keywords and returns its results document (:func:`fedlearn.app.run`).
"""

from typing import Any

from .version import __version__

__all__ = ["__version__", "run"]


def run(script: str, **flags: Any) -> dict[str, Any]:
    """Run ``script`` with ``flags`` and return the results document (see :func:`fedlearn.app.run`)."""
    from .app import run as run_script  # the package stays light to import until a run is asked for

    return run_script(script, **flags)
