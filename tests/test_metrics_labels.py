"""Prometheus label values stay bounded: a glob channel accepts any model string a client sends,
but only models some channel names or some price matches become label values."""
import secrets


def test_unknown_models_on_a_glob_channel_count_as_other(client, admin):
    from app.metrics import REQUESTS

    channel = admin.create_channel(models=["claude-*"])  # mock channel, accepts any claude-… name
    before = REQUESTS.labels("200", "other", str(channel["id"]))._value.get()  # the counter is per process
    key = admin.create_key(name="k")["key"]
    junk = [f"claude-zz-{secrets.token_hex(6)}" for _ in range(5)]
    for model in [*junk, "claude-sonnet-4-6"]:
        body = {"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
        assert client.post("/v1/messages", json=body, headers={"x-api-key": key}).status_code == 200
    metrics = client.get("/metrics").get_data(as_text=True).splitlines()
    # (octorelay_unpriced_requests names unpriced models on purpose, at most 20 of them per process)
    labelled = [line for line in metrics if line.startswith(("octorelay_requests", "octorelay_tokens",
                                                             "octorelay_cost", "octorelay_request_duration"))]
    assert not [line for line in labelled if any(model in line for model in junk)]
    lines = [line for line in metrics if line.startswith("octorelay_requests_total{")]
    assert REQUESTS.labels("200", "other", str(channel["id"]))._value.get() == before + 5
    assert any('model="claude-sonnet-4-6"' in line for line in lines), lines
