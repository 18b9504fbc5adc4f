"""What the server does with client updates, as a pipeline of small parts (:mod:`.pipeline`):

attack simulation (:mod:`.attacks`) -> checks (:mod:`.checks`) -> clipping -> rule (:mod:`.rules`,
one registry entry per rule) -> server step (:mod:`.steps`, one registry entry per step).
Sync rounds, FedBuff buffers, FedAsync updates and the distributed servers all go through it.
"""
