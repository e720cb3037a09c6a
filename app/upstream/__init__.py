"""Talking to upstreams: the pooled HTTP transport, the local mock, and SSE framing.

The only package that imports `requests`.
"""
