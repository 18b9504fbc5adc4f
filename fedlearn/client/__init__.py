"""The client side: a local job (:mod:`.trainer`) given its objective (:mod:`.objectives`) and its reply
(:mod:`.replies`) as parts."""

from .trainer import ClientUpdate, LocalJobConfig, LocalTrainer

__all__ = ["ClientUpdate", "LocalJobConfig", "LocalTrainer"]
