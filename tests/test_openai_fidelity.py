"""openai channels as a real Anthropic client sees them: structured output, usage when the upstream
sends none, the input count at the start of a stream, mid-stream error codes, deep nesting.

Every test goes through the loopback upstream (tests/support/upstream.py) and, where the client sees the
difference, through the official `anthropic` SDK.
"""
import json

import pytest

from tests.support.app import wait_for_row
from tests.support.constants import UPSTREAM_KEY
from tests.support.openai import MODEL, chunk, completion, done, text_stream
from tests.support.upstream import json_answer, sse_answer

anthropic = pytest.importorskip("anthropic")


@pytest.fixture
def openai_channel(admin, upstream):
    return admin.create_channel(name="llama", type="openai", base_url=upstream.url + "/v1",
                                api_key=UPSTREAM_KEY, models=["llama-*"])


@pytest.fixture
def sdk(live, key):
    return anthropic.Anthropic(api_key=key["key"], base_url=live, max_retries=0)


# --------------------------------------------------------------------------- mid-stream errors


@pytest.mark.parametrize("error, expected", [
    ({"message": "Rate limit reached", "type": "tokens", "code": "429"}, "rate_limit_error"),
    ({"message": "Rate limit reached", "code": 429}, "rate_limit_error"),
    ({"message": "slow down", "status": "RESOURCE_EXHAUSTED", "code": "8"}, "rate_limit_error"),
    ({"message": "busy", "type": "server_error", "code": "503"}, "overloaded_error"),
    ({"message": "bad key", "type": "invalid_request_error", "code": "invalid_api_key"}, "authentication_error"),
    ({"message": "boom", "type": "server_error", "code": None}, "api_error"),
])
def test_mid_stream_error_codes_as_strings_or_numbers(sdk, upstream, openai_channel, error, expected):
    events = text_stream(["partial "], usage=False)[:2]
    events.append((None, {"error": error}))
    upstream.script(sse_answer(events))
    with pytest.raises(anthropic.APIStatusError) as err:
        with sdk.messages.stream(model=MODEL, max_tokens=64,
                                 messages=[{"role": "user", "content": "Hi"}]) as stream:
            for _ in stream.text_stream:
                pass
    assert err.value.body["error"]["type"] == expected
    assert wait_for_row().error_type == expected


# --------------------------------------------------------------------------- deep nesting

DEPTH_PLACES = {
    # an unknown top-level field: re-encoded only when model_map renames the model
    "unknown_field": lambda body: body.update(x_deep="DEEP"),
    # a tool's schema: one level deeper in Chat Completions (tools.0.function.parameters)
    "input_schema": lambda body: body.update(tools=[{"name": "t", "input_schema": {"type": "object",
                                                                                  "properties": "DEEP"}}]),
    # an extra key in a text block: walked by the local token estimate
    "text_block": lambda body: body.update(messages=[{"role": "user", "content": [
        {"type": "text", "text": "hi", "extra": "DEEP"}]}]),
}


def deep_body(model: str, place: str, depth: int, stream: bool = False) -> bytes:
    body = {"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body["stream"] = True
    DEPTH_PLACES[place](body)
    return json.dumps(body).encode().replace(b'"DEEP"', ("[" * depth + "]" * depth).encode())


def upstream_answer(request):
    from tests.support.upstream import anthropic_message

    if request.path.endswith("/chat/completions"):
        if request.json().get("stream"):
            return done(text_stream(["ok"]))
        return json_answer(completion("ok"))
    if request.path.endswith("/count_tokens"):
        return json_answer({"input_tokens": 5})
    return json_answer(anthropic_message("ok"))


def too_deep_to_parse(resp) -> bool:
    return resp.status_code == 400 and "nested too deeply" in resp.get_json()["error"]["message"] \
        and "valid JSON" in resp.get_json()["error"]["message"]


@pytest.mark.parametrize("model, place, route, stream", [
    ("claude-x", "unknown_field", "/v1/messages", False),  # model_map: claude-x -> claude-y
    ("claude-x", "unknown_field", "/v1/messages/count_tokens", False),
    ("llama-3", "input_schema", "/v1/messages", False),
    ("llama-3", "text_block", "/v1/messages", True),
    ("llama-3", "input_schema", "/v1/messages/count_tokens", False),  # estimated locally
    ("llama-3", "text_block", "/v1/messages/count_tokens", False),
])
def test_deep_nesting_that_parses_is_never_a_500(client, admin, upstream, key, model, place, route, stream):
    """Nesting just under the parser's limit still parses; re-encoding it (model_map, the OpenAI
    body) or walking it (the token estimate) happens deeper in the stack and used to raise
    RecursionError: a 500. Every depth up to the parser's limit must be a 200 or a clear 400."""
    from tests.support.app import anthropic_channel

    anthropic_channel(admin, upstream, models=["claude-x"], model_map={"claude-x": "claude-y"})
    admin.create_channel(name="llama", type="openai", base_url=upstream.url + "/v1", api_key=UPSTREAM_KEY,
                         models=["llama-*"])
    upstream.set_default(upstream_answer)
    headers = {"x-api-key": key["key"], "content-type": "application/json"}

    def post(depth):
        return client.post(route, data=deep_body(model, place, depth, stream), headers=headers)

    low, high = 1, 5000  # the parser's limit here: the smallest depth it refuses
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if too_deep_to_parse(post(middle)) else (middle + 1, high)
    assert 300 < low < 5000, low
    answers = {depth: post(depth) for depth in (*range(max(1, low - 100), low), 400, 600)}
    bad = {depth: (resp.status_code, resp.get_data(as_text=True)[:120])
           for depth, resp in answers.items() if resp.status_code not in (200, 400)}
    assert not bad, bad
    refused = [resp for resp in answers.values() if resp.status_code == 400]
    for resp in refused:
        assert resp.get_json()["error"]["type"] == "invalid_request_error"
        assert "nested too deeply" in resp.get_json()["error"]["message"]
    assert answers[400].status_code == 200  # ordinary depths still pass


def test_deeply_nested_upstream_answers_are_the_upstreams_fault_not_a_500(sdk, upstream, openai_channel):
    from tests.support.upstream import body_answer

    deep = "[" * 5000 + "]" * 5000
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": ' + deep + "}"}}
    upstream.script(json_answer(completion("", tool_calls=[call], finish="tool_calls")),
                    body_answer(json.dumps(completion("x")).replace('"x"', deep), content_type="application/json"))
    message = sdk.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "Hi"}])
    assert message.content[-1].type == "tool_use" and message.content[-1].input == {}  # unreadable arguments
    with pytest.raises(anthropic.APIStatusError) as err:
        sdk.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "Hi"}])
    assert err.value.status_code == 502 and "nested too deeply" in err.value.message


# --------------------------------------------------------------------------- structured output

pydantic = pytest.importorskip("pydantic")


class City(pydantic.BaseModel):
    name: str
    population: int


class Trip(pydantic.BaseModel):
    destination: City
    days: int
    note: str | None = None  # optional: outside OpenAI's strict subset


def test_messages_parse_sends_response_format_and_reads_the_answer(sdk, upstream, openai_channel):
    if not hasattr(sdk.messages, "parse"):
        pytest.skip("this anthropic SDK has no messages.parse")
    upstream.script(json_answer(completion('{"name": "Paris", "population": 2100000}')))
    message = sdk.messages.parse(model=MODEL, max_tokens=64, output_format=City,
                                 messages=[{"role": "user", "content": "The capital of France?"}])
    assert message.parsed_output == City(name="Paris", population=2100000)
    sent = upstream.requests[0].json()
    assert "output_config" not in sent and "output_format" not in sent
    fmt = sent["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["name"] == "City"  # the schema's title
    assert fmt["json_schema"]["strict"] is True  # closed, all required: OpenAI's strict subset
    schema = fmt["json_schema"]["schema"]
    assert schema["properties"].keys() == {"name", "population"} and schema["additionalProperties"] is False


def test_streamed_parse_and_a_schema_outside_the_strict_subset(sdk, upstream, openai_channel):
    answer = '{"destination": {"name": "Kyoto", "population": 1460000}, "days": 4}'
    upstream.script(done(text_stream([answer[:20], answer[20:]])))
    with sdk.messages.stream(model=MODEL, max_tokens=64, output_format=Trip,
                             messages=[{"role": "user", "content": "Plan a trip"}]) as stream:
        final = stream.get_final_message()
    assert final.parsed_output == Trip(destination=City(name="Kyoto", population=1460000), days=4)
    sent = upstream.requests[0].json()
    assert sent["stream"] is True
    fmt = sent["response_format"]["json_schema"]
    assert fmt["name"] == "Trip" and fmt["strict"] is False  # `note` is optional: not strict-eligible
    assert fmt["schema"]["$defs"]["City"]["required"] == ["name", "population"]


def test_output_config_format_dict_and_the_beta_output_format(sdk, upstream, openai_channel):
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    upstream.script(json_answer(completion('{"ok": true}')), json_answer(completion('{"ok": true}')))
    message = sdk.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "ok?"}],
                                  output_config={"format": {"type": "json_schema", "schema": schema}})
    assert json.loads(message.content[0].text) == {"ok": True}
    # the first beta's top-level field (this SDK only sends it from older call sites)
    sdk.beta.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "ok?"}],
                             extra_body={"output_format": {"type": "json_schema", "schema": schema}},
                             betas=["structured-outputs-2025-11-13"])
    for seen in upstream.requests:
        assert seen.json()["response_format"] == {"type": "json_schema", "json_schema": {
            "name": "response", "schema": schema, "strict": True}}


def test_output_config_without_a_format_sends_none(sdk, upstream, openai_channel):
    upstream.script(json_answer(completion("hi")))
    sdk.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}],
                        output_config={"effort": "high"})  # Claude Code sends this on every turn
    assert "response_format" not in upstream.requests[0].json()


@pytest.mark.parametrize("fmt, named", [
    ({"type": "xml_schema", "schema": {}}, "output_config.format.type"),
    ({"type": "json_schema"}, "output_config.format.schema"),
    ({"type": "json_schema", "schema": "{}"}, "output_config.format.schema"),
])
def test_a_format_openai_cannot_express_is_a_400_and_nothing_is_sent(sdk, upstream, openai_channel, fmt, named):
    with pytest.raises(anthropic.BadRequestError) as err:
        sdk.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}],
                            output_config={"format": fmt})
    assert err.value.body["error"]["type"] == "invalid_request_error"
    assert named in err.value.body["error"]["message"]
    assert upstream.requests == []


def test_a_structured_output_refusal_is_stop_reason_refusal(sdk, upstream, openai_channel):
    refusal = "I can't help with that."
    declined = completion(None)
    declined["choices"][0]["message"]["refusal"] = refusal
    events = [chunk({"role": "assistant", "content": None, "refusal": ""}),
              chunk({"refusal": "I can't "}), chunk({"refusal": "help with that."}),
              chunk({}, finish="stop"), chunk(choices=False, usage={"prompt_tokens": 9, "completion_tokens": 5})]
    upstream.script(json_answer(declined), done(events))
    fmt = {"format": {"type": "json_schema", "schema": City.model_json_schema()}}
    message = sdk.messages.create(model=MODEL, max_tokens=64, output_config=fmt,
                                  messages=[{"role": "user", "content": "x"}])
    assert message.stop_reason == "refusal" and message.content[0].text == refusal
    with sdk.messages.stream(model=MODEL, max_tokens=64, output_config=fmt,
                             messages=[{"role": "user", "content": "x"}]) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "refusal" and final.content[0].text == refusal


# --------------------------------------------------------------------------- input counts on streams


def chat_body(stream=True):
    return {"model": MODEL, "max_tokens": 64, "stream": stream, "system": "You are terse. " * 20,
            "messages": [{"role": "user", "content": "Tell me about the sea. " * 30}]}


def test_a_stream_without_usage_bills_the_estimated_input_and_says_so(client, admin, key, upstream, openai_channel):
    from app.adaptors import estimate_input_tokens

    admin.put(f"/admin/prices/{MODEL}", json={"input": 1, "output": 2, "cache_write": 0, "cache_read": 0})
    upstream.script(done(text_stream(["a" * 40, "b" * 40], usage=False)))
    body = chat_body()
    resp = client.post("/v1/messages", json=body, headers={"x-api-key": key["key"]})
    events = [json.loads(line[6:]) for line in resp.get_data(as_text=True).splitlines() if line.startswith("data: ")]
    expected = estimate_input_tokens(body)
    assert expected > 100
    closing = next(e for e in events if e["type"] == "message_delta")["usage"]
    assert closing["input_tokens"] == expected and closing["output_tokens"] == 20
    row = wait_for_row()
    assert (row.input_tokens, row.output_tokens, row.usage_estimated) == (expected, 20, True)
    assert row.cost_nanos == expected * 1000 + 20 * 2000
    logged = admin.get("/admin/logs?limit=1").get_json()["data"][0]
    assert logged["usage_estimated"] is True and logged["input_tokens"] == expected
    used = admin.get(f"/admin/keys/{key['id']}").get_json()
    assert used["used_tokens"] == expected + 20  # quotas and budgets see the input


def test_message_start_carries_the_estimate_and_the_end_the_real_count(sdk, upstream, openai_channel):
    from app.adaptors import estimate_input_tokens

    upstream.script(done(text_stream(["Hel", "lo"])))  # upstream usage: 40 prompt (30 cached), 9 completion
    body = chat_body()
    events = list(sdk.messages.create(**body))
    start = next(e for e in events if e.type == "message_start").message.usage
    closing = next(e for e in events if e.type == "message_delta").usage
    assert start.input_tokens == estimate_input_tokens(body)  # the best known count, not 0
    assert (closing.input_tokens, closing.cache_read_input_tokens, closing.output_tokens) == (10, 30, 9)
    row = wait_for_row()
    assert (row.input_tokens, row.cache_read_input_tokens, row.usage_estimated) == (10, 30, False)
    # the SDK's accumulated message ends with the upstream's numbers, merged over the estimate
    upstream.script(done(text_stream(["Hi"])))
    with sdk.messages.stream(**{k: v for k, v in body.items() if k != "stream"}) as stream:
        final = stream.get_final_message()
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens) == (10, 30)


def test_a_whole_answer_without_usage_bills_the_estimate_too(sdk, upstream, openai_channel):
    """Servers that omit usage from a whole answer, asked for one or for a stream (a server that
    ignored `stream: true` and answered JSON): the same estimate, shown to the client and billed."""
    from app.adaptors import estimate_input_tokens, estimate_tokens

    bare = completion("z" * 48)
    del bare["usage"]
    upstream.script(json_answer(bare), json_answer(bare))
    body = {k: v for k, v in chat_body(stream=False).items() if k != "stream"}
    expected = (estimate_input_tokens(body), estimate_tokens(48))
    message = sdk.messages.create(**body)
    assert (message.usage.input_tokens, message.usage.output_tokens) == expected
    row = wait_for_row()
    assert (row.input_tokens, row.output_tokens, row.usage_estimated) == (*expected, True)
    with sdk.messages.stream(**body) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == "z" * 48
    assert (final.usage.input_tokens, final.usage.output_tokens) == expected
