"""The client side: a local job (:mod:`.trainer`) given its objective (:mod:`.objectives`) and what it sends
back (:mod:`.uplink`: weights, or an encoded delta) as parts."""

from .trainer import ClientUpdate, LocalJobConfig, LocalTrainer

__all__ = ["ClientUpdate", "LocalJobConfig", "LocalTrainer"]
