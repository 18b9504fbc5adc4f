"""fedlearn: centralized, synchronous federated and asynchronous federated training side by side."""

__version__ = "0.1.0"
