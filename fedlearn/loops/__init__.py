"""The server loops on one skeleton (:mod:`.skeleton`): synchronous rounds (:mod:`.rounds`), asynchronous
updates on the virtual clock (:mod:`.virtual_clock`); the distributed asynchronous server is in
:mod:`fedlearn.distributed.async_server`."""
