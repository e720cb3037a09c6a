"""Body checks for POST /v1/messages and /v1/messages/count_tokens (docs/api.md, Body checks)."""
from __future__ import annotations

import copy
import json

import hypothesis
import pytest
from hypothesis import strategies as st

from app.errors import InvalidRequest
from app.schemas.json_body import parse_json_body
from app.schemas.messages import check_messages_body


# --- helpers ------------------------------------------------------------------

# pieces of a JSON string's source: escaped backslashes, surrogate escapes high and low (in both
# cases), other escapes and text that looks like an escape without its backslash
SURROGATE_PIECES = ["\\\\", "\\", "\\ud83d", "\\uD800", "\\ude00", "\\uDFFF", "\\u0041", "\\n",
                    "ud800", "udc00", "a", "é"]

def minimal(**overrides) -> dict:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 1024,
            "messages": [{"role": "user", "content": "Hello"}]}
    body.update(overrides)
    return body


def with_blocks(*blocks, role="user") -> dict:
    return minimal(messages=[{"role": role, "content": list(blocks)}])


def ok(body: dict, *, count_tokens: bool = False) -> None:
    before = copy.deepcopy(body)
    assert check_messages_body(body, count_tokens=count_tokens) is None
    assert body == before, "check_messages_body must not mutate its input"


def rejected(body, *, count_tokens: bool = False) -> str:
    before = copy.deepcopy(body)
    with pytest.raises(InvalidRequest) as info:
        check_messages_body(body, count_tokens=count_tokens)
    assert body == before, "check_messages_body must not mutate its input"
    assert info.value.status == 400
    assert info.value.error_type == "invalid_request_error"
    return info.value.message


def claude_code_body(n_messages: int = 100, n_tools: int = 30) -> dict:
    """Shaped like what Claude Code sends on a turn (docs/api.md, Body checks)."""
    tools = []
    for i in range(n_tools):
        tool = {
            "name": f"Tool{i}",
            "description": f"Does thing number {i}. " * 12,
            "input_schema": {
                "type": "object",
                "$schema": "http://json-schema.org/draft-07/schema#",
                "additionalProperties": False,
                "properties": {
                    "path": {"type": "string", "description": "The absolute path " * 3},
                    "limit": {"type": "number", "description": "How many lines"},
                    "flags": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["path"],
            },
        }
        if i % 3 == 0:
            tool["defer_loading"] = True
        tools.append(tool)
    tools.append({"type": "web_search_20250305", "name": "web_search", "max_uses": 5})
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "<system-reminder>context</system-reminder>"},
        {"type": "text", "text": "Please fix the failing test.", "cache_control": {"type": "ephemeral"}},
    ]}]
    i = 1
    while len(messages) < n_messages - 1:
        messages.append({"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Let me look at the file. " * 2, "signature": "EqQBCkYIBxgCKkB" * 4},
            {"type": "text", "text": "I'll read the file."},
            {"type": "tool_use", "id": f"toolu_{i:04d}", "name": "Tool1",
             "input": {"path": f"/repo/src/file{i}.py", "limit": 200}},
        ]})
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": f"toolu_{i:04d}",
             "content": [{"type": "text", "text": "line of code\n" * 10}] if i % 2 else "ok " * 40,
             "is_error": False},
        ]})
        i += 1
    messages.append({"role": "system", "content": "<system-reminder>Plan mode is off.</system-reminder>"})
    return {
        "model": "claude-opus-4-5-20251101",
        "max_tokens": 128000,
        "stream": True,
        "system": [
            {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.",
             "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Instructions. " * 200, "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        ],
        "messages": messages,
        "tools": tools,
        "tool_choice": {"type": "auto"},
        "thinking": {"type": "adaptive"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "high"},
        "metadata": {"user_id": "user_abc_account_def_session_123"},
    }


# --- parse_json_body ------------------------------------------------------------

class TestParseJsonBody:
    def test_object(self):
        assert parse_json_body(b'{"model": "m", "n": 1.5, "s": "\xc3\xa9"}') == {"model": "m", "n": 1.5, "s": "é"}

    def test_surrogate_pair_escape_is_fine(self):
        assert parse_json_body(b'{"e": "\\ud83d\\ude00"}') == {"e": "\U0001F600"}

    def test_escaped_backslash_before_u_is_not_a_surrogate(self):
        assert parse_json_body(b'{"e": "\\\\ud800"}') == {"e": "\\ud800"}

    @pytest.mark.parametrize("raw", [b"", b"   ", b"{", b"{'a': 1}", b"hello", b'{"a": 1,}', b'{"a": 1} x',
                                     b'{"a": 01}'])
    def test_not_json(self, raw):
        with pytest.raises(InvalidRequest) as info:
            parse_json_body(raw)
        assert info.value.message.startswith("request body must be valid JSON")

    @pytest.mark.parametrize("raw", [b'{"a": NaN}', b'{"a": Infinity}', b'{"a": -Infinity}',
                                     b'{"max_tokens": 1, "t": [NaN]}'])
    def test_nan_and_infinity(self, raw):
        with pytest.raises(InvalidRequest) as info:
            parse_json_body(raw)
        assert "body must be valid JSON" in info.value.message
        assert "not allowed" in info.value.message

    @pytest.mark.parametrize("raw", [b'{"a": "\xff"}', b'{"a": "\xc3"}', b'\xfe\xff{}',
                                     b'{"a": "\xed\xa0\x80"}'])  # last: a UTF-8-encoded surrogate
    def test_invalid_utf8(self, raw):
        with pytest.raises(InvalidRequest) as info:
            parse_json_body(raw)
        assert "UTF-8" in info.value.message

    def test_utf16_is_not_accepted(self):
        with pytest.raises(InvalidRequest):
            parse_json_body('{"a": 1}'.encode("utf-16"))

    @pytest.mark.parametrize("raw", [b'{"a": "\\ud800"}', b'{"a": "x\\udc00y"}', b'{"\\ud83d": 1}',
                                     b'{"a": ["\\ud83d\\u0041"]}'])
    def test_lone_surrogate_escape(self, raw):
        # Anthropic: "The request body is not valid JSON: no low surrogate in string"
        with pytest.raises(InvalidRequest) as info:
            parse_json_body(raw)
        assert info.value.message.startswith("request body must be valid JSON: lone surrogate")

    def test_lone_surrogate_names_the_first_one(self):
        with pytest.raises(InvalidRequest) as info:
            parse_json_body(b'{"a": "\\ud83d\\ude00 \\\\ud800 \\uDC01", "b": "\\ud800"}')
        assert info.value.message == "request body must be valid JSON: lone surrogate \\udc01 in a string"

    @hypothesis.settings(max_examples=400, deadline=None)
    @hypothesis.given(st.lists(st.sampled_from(SURROGATE_PIECES), max_size=12))
    def test_lone_surrogates_found_as_the_decoder_reads_the_escapes(self, pieces):
        """The scan of the text agrees with what the decoder builds: a body is refused exactly when
        one of its decoded strings holds a surrogate code point (which UTF-8 cannot encode)."""
        raw = ('{"k": "' + "".join(pieces) + '"}').encode()
        try:
            decoded = json.loads(raw)["k"]
        except ValueError:
            return  # not JSON (a trailing lone backslash): another check's business
        lone = any(0xD800 <= ord(char) <= 0xDFFF for char in decoded)
        if lone:
            with pytest.raises(InvalidRequest, match="lone surrogate"):
                parse_json_body(raw)
        else:
            assert parse_json_body(raw) == {"k": decoded}

    @pytest.mark.parametrize("raw,kind", [(b"[]", "an array"), (b"[1, 2]", "an array"), (b'"s"', "a string"),
                                          (b"1", "a number"), (b"null", "null"), (b"true", "a boolean")])
    def test_top_level_not_object(self, raw, kind):
        with pytest.raises(InvalidRequest) as info:
            parse_json_body(raw)
        assert info.value.message == f"request body must be a JSON object, not {kind}"

    @pytest.mark.parametrize("raw", [b"[" * 200_000, b'{"a":' * 200_000, b"[" * 200_000 + b"]" * 200_000])
    def test_pathological_nesting(self, raw):
        """Pure structure is refused before parsing for its density (issue 22)..."""
        with pytest.raises(InvalidRequest) as info:
            parse_json_body(raw)
        assert "too many JSON values for its size" in info.value.message

    @pytest.mark.parametrize("nest", [b"[" * 200_000, b'{"a":' * 200_000, b"[" * 200_000 + b"]" * 200_000])
    def test_pathological_nesting_within_the_density_limit(self, nest):
        """...and when a long string pays for it, the parse itself refuses the depth."""
        raw = b'{"pad":"' + b"x" * (len(nest) * 40) + b'","a":' + nest
        with pytest.raises(InvalidRequest) as info:
            parse_json_body(raw)
        assert "body must be valid JSON" in info.value.message

    def test_huge_integer(self):
        with pytest.raises(InvalidRequest) as info:
            parse_json_body(b'{"max_tokens": ' + b"9" * 5000 + b"}")
        assert "body must be valid JSON" in info.value.message

    def test_claude_code_body_round_trips(self):
        body = claude_code_body()
        assert parse_json_body(json.dumps(body).encode()) == body


# --- check_messages_body: accepted ------------------------------------------------

class TestAccepted:
    def test_minimal(self):
        ok(minimal())

    def test_claude_code_body(self):
        body = claude_code_body()
        assert body["messages"][-1]["role"] == "system"
        assert any(t.get("defer_loading") for t in body["tools"])
        ok(body)
        ok(body, count_tokens=True)

    def test_claude_code_body_from_bytes(self):
        ok(parse_json_body(json.dumps(claude_code_body()).encode()))

    @pytest.mark.parametrize("max_tokens", [0, 1, 128000, 10**12])
    def test_max_tokens(self, max_tokens):
        ok(minimal(max_tokens=max_tokens))

    def test_consecutive_same_roles(self):
        ok(minimal(messages=[{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                             {"role": "assistant", "content": "c"}, {"role": "assistant", "content": "d"},
                             {"role": "user", "content": "e"}]))

    def test_prefill(self):
        ok(minimal(messages=[{"role": "user", "content": "What's the Greek name for Sun?"},
                             {"role": "assistant", "content": "The best answer is ("}]))

    def test_system_turns(self):
        ok(minimal(messages=[{"role": "system", "content": "first"}, {"role": "user", "content": "hi"},
                             {"role": "system", "content": [{"type": "text", "text": "mid"}]},
                             {"role": "assistant", "content": "yo"}, {"role": "system", "content": "last"}]))

    def test_first_message_may_be_assistant(self):
        ok(minimal(messages=[{"role": "assistant", "content": "hi"}]))

    def test_empty_content(self):
        # semantic, not shape: left to the upstream
        ok(minimal(messages=[{"role": "user", "content": ""}]))
        ok(minimal(messages=[{"role": "user", "content": []}]))

    @pytest.mark.parametrize("block", [
        {"type": "search_result", "source": "https://x", "title": "t", "content": [{"type": "text", "text": "x"}]},
        {"type": "container_upload", "file_id": "file_1"},
        {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
        {"type": "mcp_tool_use", "id": "mcptoolu_1", "name": "x", "server_name": "s", "input": {}},
        {"type": "brand_new_block_2030"},
        {"type": "brand_new_block_2030", "text": 5, "source": None},
    ])
    def test_unknown_block_types(self, block):
        ok(with_blocks(block))

    def test_extra_fields_inside_known_blocks(self):
        ok(with_blocks(
            {"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}, "citations": [{"any": 1}],
             "future": True},
            {"type": "tool_use", "id": "t", "name": "n", "input": {}, "caller": {"type": "direct"}},
            role="assistant"))

    @pytest.mark.parametrize("source", [
        {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        {"type": "url", "url": "https://example.com/a.png"},
        {"type": "file", "file_id": "file_011"},
        {"type": "some_future_source", "whatever": 1},
    ])
    def test_image_sources(self, source):
        ok(with_blocks({"type": "image", "source": source}))

    @pytest.mark.parametrize("source", [
        {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
        {"type": "text", "media_type": "text/plain", "data": "hello"},
        {"type": "url", "url": "https://example.com/a.pdf"},
        {"type": "content", "content": [{"type": "text", "text": "x"}]},
        {"type": "file", "file_id": "file_011"},
        {"type": "future"},
    ])
    def test_document_sources(self, source):
        ok(with_blocks({"type": "document", "source": source, "title": "t", "citations": {"enabled": True}}))

    @pytest.mark.parametrize("extra", [
        {}, {"content": "ok"}, {"content": []}, {"is_error": True},
        {"content": [{"type": "text", "text": "x"}, {"type": "image", "source": {"type": "url", "url": "u"}},
                     {"type": "search_result", "source": "s", "title": "t", "content": []}]},
        {"content": [{"type": "tool_result", "tool_use_id": "nested", "content": "deeper"}]},
    ])
    def test_tool_result(self, extra):
        ok(with_blocks({"type": "tool_result", "tool_use_id": "toolu_1", **extra}))

    def test_thinking_blocks(self):
        ok(with_blocks({"type": "thinking", "thinking": "", "signature": "sig"},
                       {"type": "redacted_thinking", "data": "opaque"},
                       {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "q"}},
                       role="assistant"))

    @pytest.mark.parametrize("system", [
        "You are helpful.", "", [],
        [{"type": "text", "text": "a", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
         {"type": "text", "text": "b"}],
        [{"type": "future_system_block", "x": 1}],
    ])
    def test_system(self, system):
        ok(minimal(system=system))

    @pytest.mark.parametrize("thinking", [
        {"type": "enabled", "budget_tokens": 2048}, {"type": "disabled"}, {"type": "adaptive"},
        {"type": "adaptive", "display": "summarized"}, {"type": "future_mode"},
    ])
    def test_thinking_config(self, thinking):
        ok(minimal(thinking=thinking))

    @pytest.mark.parametrize("field,value", [
        ("stream", True), ("stream", False),
        ("temperature", 0), ("temperature", 1), ("temperature", 0.7),
        ("top_p", 0.9), ("top_p", 1), ("top_k", 0), ("top_k", 40),
        ("stop_sequences", []), ("stop_sequences", ["\n\nHuman:", "END"]),
        ("tools", []),
        ("tools", [{"name": "get_weather", "input_schema": {"type": "object"}},
                   {"type": "web_search_20250305", "name": "web_search"},
                   {"type": "bash_20250124", "name": "bash"},
                   {"name": "deferred", "input_schema": {"type": "object"}, "defer_loading": True}]),
        ("tool_choice", {"type": "auto"}), ("tool_choice", {"type": "tool", "name": "x"}),
        ("tool_choice", {"type": "any", "disable_parallel_tool_use": True}),
        ("metadata", {}), ("metadata", {"user_id": "u"}),
        ("service_tier", "auto"), ("service_tier", "standard_only"),
        ("container", "container_1"), ("container", {"id": "c", "skills": []}), ("container", None),
        ("mcp_servers", []), ("mcp_servers", [{"type": "url", "url": "https://mcp", "name": "m"}]),
        ("context_management", {"edits": []}), ("context_management", None),
        ("output_config", {"effort": "low"}), ("output_config", {"format": {"type": "json_schema", "schema": {}}}),
        ("output_format", {"type": "json_schema", "schema": {}}), ("output_format", None),
    ])
    def test_optional_fields(self, field, value):
        ok(minimal(**{field: value}))

    @pytest.mark.parametrize("field,value", [
        ("cache_control", {"type": "ephemeral"}), ("speed", "fast"), ("inference_geo", None),
        ("some_future_field", {"deeply": [1, "two", None]}), ("anything", NotImplemented),
    ])
    def test_unknown_top_level_fields(self, field, value):
        ok(minimal(**{field: value}))

    def test_no_defaults_injected(self):
        body = minimal()
        before = copy.deepcopy(body)
        check_messages_body(body)
        assert body == before and "temperature" not in body and "stream" not in body

    def test_count_tokens_without_max_tokens(self):
        body = minimal()
        del body["max_tokens"]
        ok(body, count_tokens=True)
        ok(minimal(max_tokens=0), count_tokens=True)
        ok(minimal(tools=[{"name": "t", "input_schema": {}}], thinking={"type": "enabled", "budget_tokens": 1024},
                   system="s"), count_tokens=True)


# --- check_messages_body: rejected --------------------------------------------------

class TestRejected:
    @pytest.mark.parametrize("body", [[], "x", None, 1])
    def test_not_an_object(self, body):
        assert rejected(body).startswith("request body must be a JSON object")

    @pytest.mark.parametrize("field", ["model", "messages", "max_tokens"])
    def test_required(self, field):
        body = minimal()
        del body[field]
        assert rejected(body) == f"{field}: Missing data for required field."

    @pytest.mark.parametrize("field", ["model", "messages", "max_tokens"])
    def test_required_not_null(self, field):
        assert rejected(minimal(**{field: None})) == f"{field}: Field may not be null."

    def test_all_missing_lists_each(self):
        message = rejected({})
        for field in ("max_tokens", "messages", "model"):
            assert f"{field}: Missing data for required field." in message

    @pytest.mark.parametrize("model", [5, ["m"], {"m": 1}, True])
    def test_model_not_string(self, model):
        assert rejected(minimal(model=model)) == "model: Not a valid string."

    def test_model_empty(self):
        assert rejected(minimal(model="")).startswith("model: ")

    @pytest.mark.parametrize("value", [True, False, 1.5, 5.0, "5", [5], {"n": 5}])
    def test_max_tokens_not_integer(self, value):
        assert rejected(minimal(max_tokens=value)) == "max_tokens: Not a valid integer."

    @pytest.mark.parametrize("value", [-1, -128000])
    def test_max_tokens_negative(self, value):
        assert rejected(minimal(max_tokens=value)).startswith("max_tokens: Must be greater than or equal to 0")

    def test_count_tokens_still_types_max_tokens(self):
        assert rejected(minimal(max_tokens="5"), count_tokens=True) == "max_tokens: Not a valid integer."
        assert rejected(minimal(max_tokens=-1), count_tokens=True).startswith("max_tokens: ")

    def test_count_tokens_still_requires_model_and_messages(self):
        body = minimal()
        del body["model"], body["messages"]
        message = rejected(body, count_tokens=True)
        assert "model: Missing" in message and "messages: Missing" in message

    @pytest.mark.parametrize("messages", [{"role": "user", "content": "x"}, "hello", 5, True])
    def test_messages_not_list(self, messages):
        assert rejected(minimal(messages=messages)) == "messages: Not a valid list."

    @pytest.mark.parametrize("count_tokens", [False, True])
    def test_messages_empty(self, count_tokens):
        assert rejected(minimal(messages=[]), count_tokens=count_tokens) == \
            "messages: at least one message is required"

    @pytest.mark.parametrize("message", ["hi", 5, None, ["user", "hi"]])
    def test_message_not_object(self, message):
        body = minimal(messages=[{"role": "user", "content": "a"}, message])
        assert rejected(body) == "messages.1: Not a valid object."

    def test_role_missing(self):
        assert rejected(minimal(messages=[{"content": "a"}])) == "messages.0.role: Missing data for required field."

    @pytest.mark.parametrize("role", ["tool", "User", "", "developer", "human"])
    def test_role_unknown(self, role):
        body = minimal(messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                 {"role": role, "content": "c"}])
        assert rejected(body) == "messages.2.role: Must be one of: user, assistant, system."

    @pytest.mark.parametrize("role,expected", [(None, "Field may not be null."), (1, "Not a valid string."),
                                               (["user"], "Not a valid string.")])
    def test_role_wrong_type(self, role, expected):
        assert rejected(minimal(messages=[{"role": role, "content": "a"}])) == f"messages.0.role: {expected}"

    def test_content_missing(self):
        assert rejected(minimal(messages=[{"role": "user"}])) == \
            "messages.0.content: Missing data for required field."

    @pytest.mark.parametrize("content,expected", [
        (None, "Field may not be null."), (5, "Must be a string or a list of content blocks."),
        ({"type": "text", "text": "x"}, "Must be a string or a list of content blocks."),
    ])
    def test_content_wrong_type(self, content, expected):
        assert rejected(minimal(messages=[{"role": "user", "content": content}])) == \
            f"messages.0.content: {expected}"

    @pytest.mark.parametrize("block", ["text", 5, None, ["type", "text"]])
    def test_block_not_object(self, block):
        assert rejected(with_blocks({"type": "text", "text": "a"}, block)) == \
            "messages.0.content.1: Not a valid object."

    @pytest.mark.parametrize("block,expected", [
        ({"text": "x"}, "type: Missing data for required field."),
        ({"type": None}, "type: Field may not be null."),
        ({"type": 5}, "type: Not a valid string."),
        ({"type": ["text"]}, "type: Not a valid string."),
    ])
    def test_block_type(self, block, expected):
        assert rejected(with_blocks(block)) == f"messages.0.content.0.{expected}"

    @pytest.mark.parametrize("block,path,expected", [
        ({"type": "text"}, "text", "Missing data for required field."),
        ({"type": "text", "text": None}, "text", "Field may not be null."),
        ({"type": "text", "text": 5}, "text", "Not a valid string."),
        ({"type": "text", "text": ["x"]}, "text", "Not a valid string."),
        ({"type": "image"}, "source", "Missing data for required field."),
        ({"type": "image", "source": "https://x/a.png"}, "source", "Not a valid object."),
        ({"type": "image", "source": {}}, "source.type", "Missing data for required field."),
        ({"type": "image", "source": {"type": 1}}, "source.type", "Not a valid string."),
        ({"type": "image", "source": {"type": "base64", "data": "AA=="}}, "source.media_type",
         "Missing data for required field."),
        ({"type": "image", "source": {"type": "base64", "media_type": "image/png"}}, "source.data",
         "Missing data for required field."),
        ({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": 5}}, "source.data",
         "Not a valid string."),
        ({"type": "image", "source": {"type": "url"}}, "source.url", "Missing data for required field."),
        ({"type": "image", "source": {"type": "url", "url": None}}, "source.url", "Field may not be null."),
        ({"type": "image", "source": {"type": "file"}}, "source.file_id", "Missing data for required field."),
        ({"type": "document"}, "source", "Missing data for required field."),
        ({"type": "document", "source": None}, "source", "Field may not be null."),
        ({"type": "document", "source": ["x"]}, "source", "Not a valid object."),
        ({"type": "document", "source": {"data": "x"}}, "source.type", "Missing data for required field."),
        ({"type": "tool_use", "name": "n", "input": {}}, "id", "Missing data for required field."),
        ({"type": "tool_use", "id": "t", "input": {}}, "name", "Missing data for required field."),
        ({"type": "tool_use", "id": "t", "name": "n"}, "input", "Missing data for required field."),
        ({"type": "tool_use", "id": "t", "name": "n", "input": "{}"}, "input", "Not a valid object."),
        ({"type": "tool_use", "id": "t", "name": "n", "input": []}, "input", "Not a valid object."),
        ({"type": "tool_use", "id": 5, "name": "n", "input": {}}, "id", "Not a valid string."),
        ({"type": "server_tool_use", "id": "s", "name": "web_search"}, "input", "Missing data for required field."),
        ({"type": "server_tool_use", "id": "s", "input": {}}, "name", "Missing data for required field."),
        ({"type": "tool_result"}, "tool_use_id", "Missing data for required field."),
        ({"type": "tool_result", "tool_use_id": 1}, "tool_use_id", "Not a valid string."),
        ({"type": "tool_result", "tool_use_id": "t", "content": 5}, "content",
         "Must be a string or a list of content blocks."),
        ({"type": "tool_result", "tool_use_id": "t", "content": None}, "content", "Field may not be null."),
        ({"type": "tool_result", "tool_use_id": "t", "content": ["x"]}, "content.0", "Not a valid object."),
        ({"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "a"}, {"type": "text"}]},
         "content.1.text", "Missing data for required field."),
        ({"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image", "source": {"type": "base64"}}]},
         "content.0.source.media_type", "Missing data for required field."),
        ({"type": "tool_result", "tool_use_id": "t", "content": [{"text": "a"}]},
         "content.0.type", "Missing data for required field."),
        ({"type": "tool_result", "tool_use_id": "t", "is_error": "true"}, "is_error", "Not a valid boolean."),
        ({"type": "tool_result", "tool_use_id": "t", "is_error": 1}, "is_error", "Not a valid boolean."),
        ({"type": "tool_result", "tool_use_id": "t", "is_error": None}, "is_error", "Field may not be null."),
        ({"type": "thinking", "signature": "s"}, "thinking", "Missing data for required field."),
        ({"type": "thinking", "thinking": "t"}, "signature", "Missing data for required field."),
        ({"type": "thinking", "thinking": "t", "signature": None}, "signature", "Field may not be null."),
        ({"type": "redacted_thinking"}, "data", "Missing data for required field."),
        ({"type": "redacted_thinking", "data": {}}, "data", "Not a valid string."),
    ])
    def test_known_block_required_fields(self, block, path, expected):
        body = minimal(messages=[{"role": "user", "content": "a"},
                                 {"role": "assistant", "content": [{"type": "text", "text": "ok"}, block]}])
        assert rejected(body) == f"messages.1.content.1.{path}: {expected}"

    def test_nested_tool_result_path(self):
        inner = {"type": "tool_result", "tool_use_id": "b", "content": [{"type": "tool_use", "id": "x"}]}
        body = with_blocks({"type": "tool_result", "tool_use_id": "a", "content": [inner]})
        assert rejected(body) == "messages.0.content.0.content.0.content.0.name: Missing data for required field."

    def test_error_deep_in_long_history(self):
        body = claude_code_body()
        body["messages"][58]["content"][0]["content"] = [{"type": "image", "source": {"type": "url"}}]
        assert body["messages"][58]["content"][0]["type"] == "tool_result"
        assert rejected(body) == "messages.58.content.0.content.0.source.url: Missing data for required field."

    def test_pathological_tool_result_nesting(self):
        content = [{"type": "text", "text": "x"}]
        for _ in range(5000):
            content = [{"type": "tool_result", "tool_use_id": "t", "content": content}]
        # (too deep for copy.deepcopy, so not through `rejected`)
        with pytest.raises(InvalidRequest) as info:
            check_messages_body(minimal(messages=[{"role": "user", "content": content}]))
        assert info.value.message == "request body is nested too deeply"

    @pytest.mark.parametrize("system,path,expected", [
        (5, "system", "Must be a string or a list of text blocks."),
        ({"type": "text", "text": "x"}, "system", "Must be a string or a list of text blocks."),
        (None, "system", "Field may not be null."),
        (["x"], "system.0", "Not a valid object."),
        ([{"type": "text", "text": "a"}, {"text": "b"}], "system.1.type", "Missing data for required field."),
        ([{"type": "text", "cache_control": {"type": "ephemeral"}}], "system.0.text",
         "Missing data for required field."),
        ([{"type": "text", "text": 5}], "system.0.text", "Not a valid string."),
    ])
    def test_system(self, system, path, expected):
        assert rejected(minimal(system=system)) == f"{path}: {expected}"

    @pytest.mark.parametrize("field,value,expected", [
        ("stream", "true", "stream: Not a valid boolean."),
        ("stream", 1, "stream: Not a valid boolean."),
        ("stream", 0, "stream: Not a valid boolean."),
        ("stream", None, "stream: Field may not be null."),
        ("temperature", True, "temperature: Not a valid number."),
        ("temperature", "0.5", "temperature: Not a valid number."),
        ("temperature", None, "temperature: Field may not be null."),
        ("temperature", float("nan"), "temperature: "),
        ("temperature", float("inf"), "temperature: "),
        ("top_p", False, "top_p: Not a valid number."),
        ("top_p", [0.5], "top_p: Not a valid number."),
        ("top_k", 1.5, "top_k: Not a valid integer."),
        ("top_k", True, "top_k: Not a valid integer."),
        ("top_k", "5", "top_k: Not a valid integer."),
        ("top_k", -1, "top_k: Must be greater than or equal to 0"),
        ("stop_sequences", "END", "stop_sequences: Not a valid list."),
        ("stop_sequences", ["a", 5], "stop_sequences.1: Not a valid string."),
        ("stop_sequences", None, "stop_sequences: Field may not be null."),
        ("tools", {"name": "t"}, "tools: Not a valid list."),
        ("tools", [{"name": "t", "input_schema": {}}, "bash"], "tools.1: Not a valid object."),
        ("tools", None, "tools: Field may not be null."),
        ("tool_choice", "auto", "tool_choice: Not a valid object."),
        ("tool_choice", {"name": "x"}, "tool_choice.type: Missing data for required field."),
        ("tool_choice", {"type": 1}, "tool_choice.type: Not a valid string."),
        ("thinking", True, "thinking: Not a valid object."),
        ("thinking", {"budget_tokens": 1024}, "thinking.type: Missing data for required field."),
        ("thinking", {"type": None}, "thinking.type: Field may not be null."),
        ("metadata", "u", "metadata: Not a valid object."),
        ("metadata", [], "metadata: Not a valid object."),
        ("service_tier", 1, "service_tier: Not a valid string."),
        ("container", 5, "container: Must be a string or an object."),
        ("container", ["c"], "container: Must be a string or an object."),
        ("mcp_servers", {}, "mcp_servers: Not a valid list."),
        ("mcp_servers", ["https://mcp"], "mcp_servers.0: Not a valid object."),
        ("context_management", [], "context_management: Not a valid object."),
        ("output_config", "json", "output_config: Not a valid object."),
        ("output_config", None, "output_config: Field may not be null."),
        ("output_format", "json", "output_format: Not a valid object."),
    ])
    def test_optional_field_types(self, field, value, expected):
        assert rejected(minimal(**{field: value})).startswith(expected)

    def test_several_errors_each_named(self):
        message = rejected(minimal(max_tokens=-5, stream="yes",
                                   messages=[{"role": "bot", "content": "x"}]))
        assert message.split("; ") == [
            "max_tokens: Must be greater than or equal to 0.",
            "messages.0.role: Must be one of: user, assistant, system.",
            "stream: Not a valid boolean.",
        ]


# --- a real Claude Code body ---------------------------------------------------

def test_claude_code_body_passes_the_check():
    """Its cost is measured by bench/run.sh (the Claude Code-sized rows), not asserted here."""
    body = parse_json_body(json.dumps(claude_code_body()).encode())
    size = len(json.dumps(body))
    assert 40_000 < size < 70_000, size
    assert len(body["messages"]) == 100 and len(body["tools"]) == 31
    check_messages_body(body)


@pytest.mark.parametrize("raw", [
    b'{"model": "a", "model": "b", "max_tokens": 1, "messages": []}',
    b'{"model": "a", "max_tokens": 1, "messages": [{"role": "user", "role": "assistant", "content": "x"}]}',
])
def test_repeated_keys_are_refused(raw):
    with pytest.raises(InvalidRequest, match="appears twice"):
        parse_json_body(raw)


@pytest.mark.parametrize("raw", [
    # the repeat sits deep, or the value it would drop holds objects of its own
    b'{"model": "m", "max_tokens": 1, "messages": [], "tools": [{"input_schema": {"a": {"b": 1, "b": 2}}}]}',
    b'{"model": "m", "model": {"x": "a:b", "y": {"z": 1}}, "max_tokens": 1, "messages": []}',
    b'{"model": "m", "max_tokens": 1, "max_tokens": 2, "messages": [], "s": "\\u003a"}',
    b'{"k\\u003a": 1, "k\\u003a": 2}',
    b'{"k:": 1, "k\\u003a": 2}',  # the same key, spelled two ways
])
def test_repeated_keys_are_refused_however_they_are_hidden(raw):
    with pytest.raises(InvalidRequest, match="appears twice"):
        parse_json_body(raw)
