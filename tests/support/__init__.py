"""Support code for the test suite (and bench/): nothing here is collected as a test.

    constants    the admin token, secret key, canaries and SECRETS_USED, the test backends
    app          in-process helpers: the settling test client, assert_error, wait_for_row, a channel on the upstream
    admin        AdminClient: the admin API with the token, in-process or over HTTP
    bodies       Messages request bodies
    processes    real processes: procs (fixture), serve_gunicorn(), migrate(), base_env, worker_pids
    net          free_port, url on 127.0.0.1
    database     query: read the test database directly, after a server has gone
    raw_http     one loopback TCP connection that speaks raw HTTP/1.1
    waiting      wait_until
    logs         captured_logs: what an octorelay logger said
    upstream     the scripted upstream on loopback (fixture `upstream`)
    clouds       fake Bedrock and Vertex AI on top of it
    browser      headless Chromium (fixtures `browser`, `tab`)
    cli_harness  `octorelay ...` in-process (fixture `runner`)
    claude_code  the Claude Code binary (fixture `claude_bin`)
    openai       OpenAI chat-completion answers for the openai channel type
    clients/     client scripts run under node

Test modules import from here (and get fixtures from tests/conftest.py), never from each other;
tests/test_layering.py checks it.
"""
