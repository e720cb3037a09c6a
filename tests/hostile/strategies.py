"""Hypothesis strategies: valid Messages and count_tokens bodies (every block type and optional
field), the same bodies with one field given a wrong type or left out (`broken_body`, which
names the field), and hostile JSON and text."""
from __future__ import annotations

import copy
import json

from hypothesis import strategies as st

FLOATS = st.floats(allow_nan=False, allow_infinity=False)
TEXT = st.text(max_size=20)  # any code point but lone surrogates; NUL included
# lone surrogates too: json.dumps writes them as \udXXX escapes, which Python's json accepts back
LONE_SURROGATES = st.sampled_from(["\ud800", "\udfff", "a\udbff", "\ud83d!", "\ude00\ud83d", "x\udc00y"])
HOSTILE_TEXT = st.one_of(TEXT, TEXT, LONE_SURROGATES)
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70), FLOATS, TEXT)
JSON = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=10)
HOSTILE_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70), FLOATS,
                           HOSTILE_TEXT)
HOSTILE_JSON = st.recursive(HOSTILE_SCALAR, lambda inner: st.lists(inner, max_size=3)
                            | st.dictionaries(HOSTILE_TEXT, inner, max_size=3), max_leaves=6)
SMALL_LIST = st.lists(SCALAR, max_size=2)
SMALL_DICT = st.dictionaries(st.text(max_size=4), SCALAR, max_size=2)

# wrong values, by what the field wants
NOT_STR = st.one_of(st.none(), st.booleans(), st.integers(), FLOATS, SMALL_LIST, SMALL_DICT)
NOT_OBJ = st.one_of(st.none(), st.booleans(), st.integers(), FLOATS, TEXT, SMALL_LIST)
NOT_LIST = st.one_of(st.none(), st.booleans(), st.integers(), FLOATS, TEXT, SMALL_DICT)
NOT_CONTENT = st.one_of(st.none(), st.booleans(), st.integers(), FLOATS, SMALL_DICT)
FRACTIONAL = FLOATS.filter(lambda f: not f.is_integer())
NOT_INT = st.one_of(st.none(), st.booleans(), FRACTIONAL, TEXT, SMALL_LIST, SMALL_DICT,
                    st.integers(max_value=-1))
# optional fields: null is left out (whether Anthropic takes null there is not ours to assert)
NN_NOT_STR = st.one_of(st.booleans(), st.integers(), FLOATS, SMALL_LIST, SMALL_DICT)
NN_NOT_OBJ = st.one_of(st.booleans(), st.integers(), FLOATS, TEXT, SMALL_LIST)
NN_NOT_LIST = st.one_of(st.booleans(), st.integers(), FLOATS, TEXT, SMALL_DICT)
NN_NOT_NUM = st.one_of(st.booleans(), TEXT, SMALL_LIST, SMALL_DICT)
NN_NOT_BOOL = st.one_of(st.integers(), FLOATS, TEXT, SMALL_LIST, SMALL_DICT)
NN_NOT_INT = st.one_of(st.booleans(), FRACTIONAL, TEXT, SMALL_LIST, SMALL_DICT, st.integers(max_value=-1))

ROLES = ("user", "assistant", "system")
BLOCK_TYPES = ("text", "image", "document", "tool_use", "server_tool_use", "tool_result", "thinking",
               "redacted_thinking")
KNOWN_FIELDS = ("model", "messages", "max_tokens", "system", "stream", "temperature", "top_p", "top_k",
                "stop_sequences", "tools", "tool_choice", "thinking", "metadata", "service_tier",
                "container", "mcp_servers", "context_management", "output_config", "output_format")

CACHE = st.fixed_dictionaries({"type": st.just("ephemeral")})


def block(required: dict, optional: dict | None = None):
    return st.fixed_dictionaries(required, optional=optional or {})


TEXT_BLOCK = block({"type": st.just("text"), "text": TEXT}, {"cache_control": CACHE})
IMAGE_SOURCES = {
    "base64": block({"type": st.just("base64"), "media_type": st.sampled_from(["image/png", "image/jpeg"]),
                     "data": st.text("ABCDEFabcdef0123456789+/=", max_size=16)}),
    "url": block({"type": st.just("url"), "url": st.just("https://example.com/cat.png")}),
    "file": block({"type": st.just("file"), "file_id": TEXT}),
    # source types octorelay does not know pass (forward compatibility)
    "other": block({"type": st.text(min_size=1, max_size=8).filter(lambda t: t not in ("base64", "url", "file"))},
                   {"extra": JSON}),
}
IMAGE_BLOCK = block({"type": st.just("image"), "source": st.one_of(*IMAGE_SOURCES.values())},
                    {"cache_control": CACHE})
DOCUMENT_BLOCK = block({"type": st.just("document"),
                        "source": block({"type": st.sampled_from(["text", "base64", "url", "content", "file"])},
                                        {"media_type": TEXT, "data": TEXT, "url": TEXT})},
                       {"title": TEXT, "context": TEXT})
TOOL_USE_BLOCK = block({"type": st.sampled_from(["tool_use", "server_tool_use"]), "id": TEXT, "name": TEXT,
                        "input": st.dictionaries(st.text(max_size=6), JSON, max_size=3)})
TOOL_RESULT_BLOCK = block({"type": st.just("tool_result"), "tool_use_id": TEXT},
                          {"content": st.one_of(TEXT, st.lists(TEXT_BLOCK | IMAGE_BLOCK, max_size=2)),
                           "is_error": st.booleans(), "cache_control": CACHE})
THINKING_BLOCK = block({"type": st.just("thinking"), "thinking": TEXT, "signature": TEXT})
REDACTED_BLOCK = block({"type": st.just("redacted_thinking"), "data": TEXT})
UNKNOWN_BLOCK = st.builds(lambda extra, kind: {**extra, "type": kind},
                          st.dictionaries(st.text(max_size=6), JSON, max_size=3),
                          st.text(max_size=12).filter(lambda t: t not in BLOCK_TYPES))
VALID_BLOCK = st.one_of(TEXT_BLOCK, IMAGE_BLOCK, DOCUMENT_BLOCK, TOOL_USE_BLOCK, TOOL_RESULT_BLOCK,
                        THINKING_BLOCK, REDACTED_BLOCK, UNKNOWN_BLOCK)
MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(ROLES),
                                 "content": st.one_of(TEXT, st.lists(VALID_BLOCK, max_size=3))})

OPTIONAL_VALID = {
    "system": st.one_of(TEXT, st.lists(TEXT_BLOCK, max_size=2)),
    "stream": st.booleans(),
    "temperature": st.one_of(st.floats(0, 1), st.integers(0, 1)),
    "top_p": st.floats(0, 1),
    "top_k": st.integers(0, 500),
    "stop_sequences": st.lists(TEXT, max_size=3),
    "tools": st.lists(block({"name": TEXT, "input_schema": st.just({"type": "object"})},
                            {"description": TEXT, "defer_loading": st.booleans()}), max_size=2),
    "tool_choice": block({"type": st.sampled_from(["auto", "any", "none", "tool"])},
                         {"name": TEXT, "disable_parallel_tool_use": st.booleans()}),
    "thinking": st.one_of(block({"type": st.just("enabled"), "budget_tokens": st.integers(1024, 64000)}),
                          block({"type": st.sampled_from(["disabled", "adaptive"])})),
    "metadata": block({}, {"user_id": st.none() | TEXT}),
    "service_tier": st.sampled_from(["auto", "standard_only"]),
    "container": st.one_of(st.none(), TEXT, SMALL_DICT),
    "mcp_servers": st.lists(SMALL_DICT, max_size=2),
    "context_management": st.one_of(st.none(), SMALL_DICT),
    "output_config": SMALL_DICT,
    "output_format": st.one_of(st.none(), SMALL_DICT),
}

OPTIONAL_WRONG = {
    "system": st.one_of(st.booleans(), st.integers(), FLOATS, SMALL_DICT),
    "stream": NN_NOT_BOOL,
    "temperature": NN_NOT_NUM,
    "top_p": NN_NOT_NUM,
    "top_k": NN_NOT_INT,
    "stop_sequences": NN_NOT_LIST,
    "tools": NN_NOT_LIST,
    "tool_choice": NN_NOT_OBJ,
    "thinking": NN_NOT_OBJ,
    "metadata": NN_NOT_OBJ,
    "service_tier": NN_NOT_STR,
    "container": st.one_of(st.booleans(), st.integers(), FLOATS, SMALL_LIST),
    "mcp_servers": NN_NOT_LIST,
    "output_config": NN_NOT_OBJ,
}


@st.composite
def valid_body(draw, count_tokens: bool = False) -> dict:
    """A body Anthropic accepts for shape; octorelay must forward it untouched."""
    body = {"model": draw(st.text(min_size=1, max_size=40)),
            "messages": draw(st.lists(MESSAGE, min_size=1, max_size=3))}
    if not count_tokens or draw(st.booleans()):
        body["max_tokens"] = draw(st.one_of(st.integers(0, 128_000), st.integers(0, 2 ** 64)))
    for name, strategy in OPTIONAL_VALID.items():
        if draw(st.integers(0, 3)) == 0:
            body[name] = draw(strategy)
    # unknown top-level fields pass through (forward compatibility)
    body.update(draw(st.dictionaries(st.text(min_size=1, max_size=10).filter(lambda k: k not in KNOWN_FIELDS),
                                     JSON, max_size=2)))
    keys = draw(st.permutations(list(body)))
    return {k: body[k] for k in keys}


@st.composite
def serialized(draw, bodies) -> tuple[dict, bytes]:
    body = draw(bodies)
    raw = json.dumps(body, ensure_ascii=draw(st.booleans()),
                     separators=draw(st.sampled_from([(",", ":"), (", ", ": ")])),
                     indent=draw(st.sampled_from([None, 2]))).encode("utf-8")
    return body, raw


_MISSING = object()


def _with(obj: dict, key: str, value) -> dict:
    out = copy.deepcopy(obj)
    if value is _MISSING:
        out.pop(key, None)
    else:
        out[key] = value
    return out


def missing_or(strategy):
    return st.one_of(st.just(_MISSING), strategy)


def _broken_blocks():
    """(block, path suffix) pairs: one known content block with exactly one shape error."""
    cases = [
        NOT_OBJ.map(lambda v: (v, "")),
        st.tuples(VALID_BLOCK, missing_or(NOT_STR)).map(lambda t: (_with(t[0], "type", t[1]), ".type")),
    ]
    required = {
        TEXT_BLOCK: {"text": NOT_STR},
        TOOL_USE_BLOCK: {"id": NOT_STR, "name": NOT_STR, "input": NOT_OBJ},
        TOOL_RESULT_BLOCK: {"tool_use_id": NOT_STR},
        THINKING_BLOCK: {"thinking": NOT_STR, "signature": NOT_STR},
        REDACTED_BLOCK: {"data": NOT_STR},
        IMAGE_BLOCK: {"source": NOT_OBJ},
        DOCUMENT_BLOCK: {"source": NOT_OBJ},
    }
    for valid, fields in required.items():
        for name, wrong in fields.items():
            cases.append(st.tuples(valid, missing_or(wrong)).map(
                lambda t, name=name: (_with(t[0], name, t[1]), f".{name}")))

    def broken_source(kind_block, sub):
        return st.tuples(kind_block, missing_or(NOT_STR)).map(
            lambda t: ({**t[0], "source": _with(t[0]["source"], sub, t[1])}, f".source.{sub}"))

    for kind, subs in (("base64", ("type", "media_type", "data")), ("url", ("url",)), ("file", ("file_id",))):
        image = block({"type": st.just("image"), "source": IMAGE_SOURCES[kind]})
        cases += [broken_source(image, sub) for sub in subs]
    cases.append(broken_source(DOCUMENT_BLOCK, "type"))
    cases += [
        st.tuples(TOOL_RESULT_BLOCK, NOT_CONTENT).map(lambda t: (_with(t[0], "content", t[1]), ".content")),
        st.tuples(TOOL_RESULT_BLOCK, st.lists(TEXT_BLOCK, max_size=2), NOT_OBJ).map(
            lambda t: (_with(t[0], "content", t[1] + [t[2]]), f".content.{len(t[1])}")),
        st.tuples(TOOL_RESULT_BLOCK, NN_NOT_BOOL).map(lambda t: (_with(t[0], "is_error", t[1]), ".is_error")),
    ]
    return st.one_of(*cases)


BROKEN_BLOCK = _broken_blocks()


def _pick_message(draw, body) -> int:
    return draw(st.integers(0, len(body["messages"]) - 1))


def _blocks_of(message: dict) -> list:
    if not isinstance(message.get("content"), list):
        message["content"] = []
    return message["content"]


def m_required_wrong(draw, body, count_tokens):
    name = draw(st.sampled_from(["model", "max_tokens", "messages"]))
    wrong = {"model": NOT_STR | st.just(""), "max_tokens": NOT_INT, "messages": NOT_LIST | st.just([])}
    body[name] = draw(wrong[name])
    return name


def m_required_missing(draw, body, count_tokens):
    name = draw(st.sampled_from(["model", "messages"] + ([] if count_tokens else ["max_tokens"])))
    body.pop(name, None)
    return name


def m_message_not_object(draw, body, count_tokens):
    i = _pick_message(draw, body)
    body["messages"][i] = draw(NOT_OBJ)
    return f"messages.{i}"


def m_role(draw, body, count_tokens):
    i = _pick_message(draw, body)
    body["messages"][i] = _with(body["messages"][i], "role", draw(missing_or(
        NOT_STR | st.text(max_size=12).filter(lambda r: r not in ROLES))))
    return f"messages.{i}.role"


def m_content(draw, body, count_tokens):
    i = _pick_message(draw, body)
    body["messages"][i] = _with(body["messages"][i], "content", draw(missing_or(NOT_CONTENT)))
    return f"messages.{i}.content"


def m_block(draw, body, count_tokens):
    i = _pick_message(draw, body)
    blocks = _blocks_of(body["messages"][i])
    j = draw(st.integers(0, len(blocks)))
    bad, suffix = draw(BROKEN_BLOCK)
    blocks.insert(j, bad)
    return f"messages.{i}.content.{j}{suffix}"


def m_system_block(draw, body, count_tokens):
    blocks = draw(st.lists(TEXT_BLOCK, max_size=2))
    j = draw(st.integers(0, len(blocks)))
    bad, suffix = draw(BROKEN_BLOCK)
    blocks.insert(j, bad)
    body["system"] = blocks
    return f"system.{j}{suffix}"


def m_optional_wrong(draw, body, count_tokens):
    name = draw(st.sampled_from(sorted(OPTIONAL_WRONG)))
    body[name] = draw(OPTIONAL_WRONG[name])
    return name


def m_inner(draw, body, count_tokens):
    kind = draw(st.sampled_from(["tools", "mcp_servers", "stop_sequences", "tool_choice", "thinking"]))
    if kind in ("tools", "mcp_servers", "stop_sequences"):
        good = st.lists(TEXT if kind == "stop_sequences" else SMALL_DICT, max_size=2)
        items = draw(good)
        j = draw(st.integers(0, len(items)))
        items.insert(j, draw(NOT_STR if kind == "stop_sequences" else NOT_OBJ))
        body[kind] = items
        return f"{kind}.{j}"
    body[kind] = _with(draw(OPTIONAL_VALID[kind]), "type", draw(missing_or(NOT_STR)))
    return f"{kind}.type"


MUTATIONS = [m_required_wrong, m_required_missing, m_message_not_object, m_role, m_content, m_block,
             m_system_block, m_optional_wrong, m_inner]


@st.composite
def broken_body(draw, count_tokens: bool = False) -> tuple[dict, str]:
    """A valid body with exactly one shape error; returns it and the field path the 400 must name."""
    body = copy.deepcopy(draw(valid_body(count_tokens=count_tokens)))
    mutation = draw(st.sampled_from(MUTATIONS))
    return body, mutation(draw, body, count_tokens)
