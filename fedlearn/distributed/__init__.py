"""Runs over torch.distributed (gloo), started by torchrun: rank 0 is the server, every other rank a worker.

Workers host a share of the clients (client ``c`` lives on rank ``1 + c mod
(world - 1)``), load the data and draw the partition from the seed themselves,
so only models and updates cross the wire (:mod:`.wire`). The server listens
to every worker on its own thread (:mod:`.inbox`) and trusts a worker for
nothing it cannot prove: an update is taken only as the answer to a job that
worker was sent. Synchronous rounds: :mod:`.sync_rounds`; real asynchrony:
:mod:`.async_server`; set-up, placement and the worker's loop: :mod:`.cluster`
and :mod:`.worker`.
"""
