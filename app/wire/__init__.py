"""What adaptors, upstream transports and services share: pure values and framing, no I/O.

The upstream request value (`request.py`) and SSE framing (`sse.py`) live
here so that adaptors can build requests and read streams without importing
the transport (and with it `requests`), and the layers meet on neutral ground.
"""
