"""Talking to upstreams: the pooled HTTP transport, cloud transports, and the local mock.

The only package that imports `requests`. The request value and SSE framing
it shares with adaptors live in app/wire.
"""
