"""The wire protocols the server speaks, each a thin adapter over the one InferenceService.

Each module's ``router(service)`` returns the routes of one protocol, handed the service
explicitly: a handler turns the wire format into plain arguments and a ``Call`` (principal,
request id, disconnect), calls the service, and encodes its answer. ``http`` holds what the HTTP
adapters share; ``v2_codec`` and ``triton`` are the v2 wire format and Triton's documents,
``documents`` the image answers. A new protocol is a new module here plus one line in ``app``.
"""
