"""Faults (issue 7, item 3): bad upstream bytes, a database or Redis that goes away, gunicorn
signals. Each fault is its own test; what other modules already cover (upstream refuses,
hangs before headers, drops or stalls mid-stream: test_relay_stream, test_relay_messages,
test_relay_gunicorn) is not repeated here.

Helpers: tests/faults/helpers.py. Process-level tests are marked slow, bind only 127.0.0.1, bound every wait and stop what they
start (the `procs` fixture kills each process group at teardown).
"""
