"""Hostile input (issue 7, item 1): whatever a client or a leaked admin token sends, octorelay
answers with a valid success or a well-formed Anthropic error -- never a 500, never a hang --
and nothing that failed validation reaches an upstream or the database.

1. Bodies, through the Flask test client (property-based, `hypothesis`): random bytes, random
   JSON, valid Messages bodies (must pass, byte for byte), the same bodies with one field given
   a wrong type or a missing required field (must be a 400 naming that field, nothing forwarded),
   deep nesting, huge strings, invalid UTF-8, NaN/Infinity, duplicate keys, BOMs; the same for
   `count_tokens` and for the admin API bodies (a 400 creates or changes nothing).
2. Unknown methods and paths: 404 `not_found_error` / 405 `invalid_request_error`, never a 500
   (nor a redirect or an HTML page).
3. A real gunicorn (one worker) on raw sockets: CR/LF injection, 16 KB and 64 KB header values,
   bodies over OCTORELAY_MAX_BODY_MB sent slowly (with Content-Length and chunked),
   Transfer-Encoding + Content-Length smuggling, invalid chunk sizes, bodies that never finish.
   Afterwards the server answers /healthz and its only worker is the one it booted with.

   What counts as "the worker did not die": the worker PID set (children of the gunicorn master,
   read from /proc) is the same at the end as at the start, stderr has exactly one "Booting
   worker" line and none of "WORKER TIMEOUT", "Worker exiting", "Error handling request",
   octorelay's "unhandled error" (a 500 with a traceback) or "failed to record request".
   Expected on stderr: gunicorn's own "Invalid request from ip=..." warnings for the requests it
   refuses itself (bad framing, bad header syntax, limits), and octorelay's access lines.

Hypothesis runs derandomized (the same examples on every run, so CI is reproducible) with a
modest number of examples, no deadline, no example database and no "explain" phase; each
property builds its app once and reuses it, and admin properties reset the rows they touch
at the start of every example so that one stored bad value cannot fail the next example.
Batteries of hand-picked cases collect every failing case before failing (`Problems`).
"""
