from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcpgw.protocol.jsonrpc import (
    INVALID_REQUEST,
    KNOWN_METHODS,
    MAX_DEPTH,
    METHODS_BY_REVISION,
    PARSE_ERROR,
    JsonRpcParseError,
    Message,
    canonical_method,
    dumps,
    error_response,
    parse_lenient,
    parse_strict,
)

CALL = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search_code","arguments":{"q":"x"}}}'


def rejected(body: bytes | str, code: int = INVALID_REQUEST) -> JsonRpcParseError:
    if isinstance(body, str):
        body = body.encode()
    with pytest.raises(JsonRpcParseError) as info:
        parse_strict(body)
    assert info.value.code == code, info.value.message
    return info.value


def request(**members) -> bytes:
    return json.dumps({"jsonrpc": "2.0", **members}).encode()


# --- valid messages ----------------------------------------------------------


def test_request():
    [msg], is_batch = parse_strict(CALL)
    assert not is_batch
    assert msg.kind == "request"
    assert (msg.id, msg.method) == (1, "tools/call")
    assert msg.params == {"name": "search_code", "arguments": {"q": "x"}}
    assert list(msg.obj) == ["jsonrpc", "id", "method", "params"]


def test_string_id_and_no_params():
    [msg], _ = parse_strict(request(id="abc", method="ping"))
    assert (msg.kind, msg.id, msg.params) == ("request", "abc", None)


def test_array_params_allowed():
    [msg], _ = parse_strict(request(id=1, method="x", params=[1, 2]))
    assert msg.params == [1, 2]


def test_notification():
    [msg], _ = parse_strict(request(method="notifications/initialized"))
    assert msg.kind == "notification"
    assert msg.id is None


def test_response():
    [msg], _ = parse_strict(request(id=3, result={"content": []}))
    assert msg.kind == "response"
    assert msg.result == {"content": []}


def test_error_response():
    [msg], _ = parse_strict(request(id="s-1", error={"code": -1, "message": "declined"}))
    assert msg.kind == "error"
    assert msg.error == {"code": -1, "message": "declined"}


def test_error_response_with_null_id():
    [msg], _ = parse_strict(request(id=None, error={"code": -32700, "message": "parse error"}))
    assert msg.kind == "error"


def test_batch():
    body = json.dumps(
        [
            {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": "srv-1", "result": {}},
        ]
    ).encode()
    messages, is_batch = parse_strict(body)
    assert is_batch
    assert [m.kind for m in messages] == ["request", "notification", "response"]


def test_whitespace_around_json_is_allowed():
    [msg], _ = parse_strict(b" \r\n\t" + CALL + b"\n")
    assert msg.method == "tools/call"


def test_non_ascii_and_escaped_surrogate_pairs_are_fine():
    [msg], _ = parse_strict(request(id=1, method="x", params={"q": "世界 😀"}))  # ensure_ascii: \ud83d\ude00
    assert msg.params == {"q": "世界 😀"}
    [msg], _ = parse_strict('{"jsonrpc":"2.0","id":1,"method":"x","params":{"q":"世界 😀"}}'.encode())
    assert msg.params == {"q": "世界 😀"}


def test_same_key_in_different_objects_is_not_a_duplicate():
    parse_strict(request(id=1, method="x", params={"a": {"name": 1}, "b": {"name": 2}}))


def test_large_safe_integer_id():
    [msg], _ = parse_strict(request(id=2**53 - 1, method="ping"))
    assert msg.id == 2**53 - 1


def test_nesting_at_the_limit_is_accepted():
    params = 1
    for _ in range(MAX_DEPTH - 1):  # the message object is level 1
        params = [params]
    parse_strict(request(id=1, method="x", params=params))


def test_many_shallow_containers_are_not_deep():
    params = {"rows": [{"a": [1, {"b": 2}]} for _ in range(500)]}
    parse_strict(request(id=1, method="x", params=params))


def test_brackets_inside_strings_do_not_count_as_nesting():
    params = {"text": "[" * 500 + '\\"{' * 100}
    parse_strict(request(id=1, method="x", params=params))


# --- rejected: encoding and JSON ------------------------------------------------


def test_invalid_utf8():
    rejected(b'{"jsonrpc":"2.0","id":1,"method":"x\xff"}', PARSE_ERROR)


def test_overlong_utf8():
    rejected(b'{"jsonrpc":"2.0","id":1,"method":"\xc0\xaf"}', PARSE_ERROR)


def test_utf8_encoded_surrogate():
    rejected(b'{"jsonrpc":"2.0","id":1,"method":"\xed\xa0\x80"}', PARSE_ERROR)


@pytest.mark.parametrize("escape", ["\\ud800", "\\uDFFF", "\\ud83dx", "\\ude00\\ud83d"])
def test_escaped_lone_surrogate(escape):
    rejected('{"jsonrpc":"2.0","id":1,"method":"x","params":{"q":"%s"}}' % escape, PARSE_ERROR)


def test_escaped_lone_surrogate_in_key():
    rejected('{"jsonrpc":"2.0","id":1,"method":"x","params":{"\\ud800":1}}', PARSE_ERROR)


def test_escaped_backslash_before_u_is_not_a_surrogate():
    [msg], _ = parse_strict(b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"q":"\\\\ud800"}}')
    assert msg.params == {"q": "\\ud800"}


def test_bom():
    rejected(b"\xef\xbb\xbf" + CALL, PARSE_ERROR)


@pytest.mark.parametrize(
    "body",
    [b"", b" ", b"{", b'{"jsonrpc":"2.0",}', b"{'jsonrpc':'2.0'}", CALL + b"x", CALL + CALL, b"[1,]", b"// c\n{}"],
)
def test_invalid_json(body):
    rejected(body, PARSE_ERROR)


def test_control_character_in_string():
    rejected(b'{"jsonrpc":"2.0","id":1,"method":"tools/\x00call"}', PARSE_ERROR)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity(constant):
    err = rejected('{"jsonrpc":"2.0","id":1,"method":"x","params":{"v":%s}}' % constant, PARSE_ERROR)
    assert constant in err.message


def test_float_overflowing_to_infinity():
    rejected('{"jsonrpc":"2.0","id":1,"method":"x","params":{"v":1e400}}', PARSE_ERROR)


def test_integer_beyond_digit_limit():
    rejected('{"jsonrpc":"2.0","id":1,"method":"x","params":{"v":%s}}' % ("9" * 5000), PARSE_ERROR)


# --- rejected: duplicate keys -------------------------------------------------------


def test_duplicate_key_at_top_level():
    rejected('{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call"}', PARSE_ERROR)


def test_duplicate_tool_name_attack():
    body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search_code","name":"push_files"}}'
    err = rejected(body, PARSE_ERROR)
    assert '"name"' in err.message


def test_duplicate_key_deep_inside_arguments():
    inner = '{"a":{"b":[{"c":{"path":"/ok","path":"/etc/passwd"}}]}}'
    rejected('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":%s}}' % inner, PARSE_ERROR)


def test_duplicate_key_written_with_unicode_escape():
    body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search_code","na\\u006de":"push_files"}}'
    rejected(body, PARSE_ERROR)


def test_duplicate_key_inside_batch_element():
    rejected('[{"jsonrpc":"2.0","id":1,"method":"x","id":2}]', PARSE_ERROR)


def test_keys_differing_by_case_are_distinct():
    parse_strict(b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"name":1,"Name":2}}')


# --- rejected: structure ------------------------------------------------------------------


def test_nesting_too_deep():
    params = 1
    for _ in range(MAX_DEPTH):  # one level more than allowed
        params = {"a": params}
    rejected(request(id=1, method="x", params=params))


def test_nesting_too_deep_mixed_containers():
    body = b'{"jsonrpc":"2.0","id":1,"method":"x","params":' + b'[{"a":' * 40 + b"1" + b"}]" * 40 + b"}"
    rejected(body)


@pytest.mark.parametrize("opener", [b"[", b'{"a":', b'[{"a":'])
def test_huge_depth_does_not_crash(opener):
    rejected(opener * 200_000)


def test_huge_depth_that_is_also_unterminated_is_an_error():
    with pytest.raises(JsonRpcParseError):
        parse_strict(b"[" * 1_000_000)


@pytest.mark.parametrize("body", [b"1", b'"x"', b"null", b"true"])
def test_top_level_not_object_or_array(body):
    rejected(body)


def test_empty_batch():
    rejected(b"[]")


@pytest.mark.parametrize("element", ["1", '"x"', "null", "[]", '[{"jsonrpc":"2.0","method":"x"}]'])
def test_batch_element_not_object(element):
    rejected('[{"jsonrpc":"2.0","method":"x"},%s]' % element)


@pytest.mark.parametrize("version", [None, "2", "1.0", "2.0 ", 2.0, 2])
def test_wrong_jsonrpc_version(version):
    members = {"id": 1, "method": "x"}
    if version is not None:
        members["jsonrpc"] = version
    err = rejected(json.dumps(members))
    assert err.id == 1  # recovered for the error response


@pytest.mark.parametrize("method", [1, None, True, ["tools/call"], {"a": 1}])
def test_method_not_a_string(method):
    rejected(request(id=1, method=method))


@pytest.mark.parametrize("bad_id", [True, False, 1.0, 1.5, None, {"a": 1}, [1], 2**53, -(2**53)])
def test_request_id_not_string_or_integer(bad_id):
    err = rejected(request(id=bad_id, method="tools/call"))
    assert err.id is None


@pytest.mark.parametrize("extra", [{"result": {}}, {"error": {"code": 1, "message": "m"}}, {"result": None}])
def test_message_with_method_and_result_or_error(extra):
    rejected(request(id=1, method="x", **extra))


@pytest.mark.parametrize("params", [1, "x", None, True])
def test_params_not_structured(params):
    rejected(request(id=1, method="x", params=params))


def test_response_without_result_or_error():
    err = rejected(request(id=5))
    assert err.id == 5


def test_response_with_both_result_and_error():
    rejected(request(id=5, result={}, error={"code": 1, "message": "m"}))


def test_response_without_id():
    rejected(request(result={}))


@pytest.mark.parametrize("bad_id", [None, True, 1.5])
def test_result_response_with_bad_id(bad_id):
    rejected(request(id=bad_id, result={}))


@pytest.mark.parametrize(
    "error", [None, "oops", {"code": "1", "message": "m"}, {"code": 1}, {"message": "m"}, {"code": True, "message": "m"}]
)
def test_malformed_error_object(error):
    rejected(request(id=1, error=error))


def test_error_response_with_bool_id():
    rejected(request(id=True, error={"code": 1, "message": "m"}))


def test_duplicate_request_id_in_batch():
    body = json.dumps(
        [{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, {"jsonrpc": "2.0", "id": 1, "method": "tools/call"}]
    )
    err = rejected(body)
    assert err.id == 1


def test_integer_and_string_ids_are_distinct_in_batch():
    body = json.dumps([{"jsonrpc": "2.0", "id": 1, "method": "a"}, {"jsonrpc": "2.0", "id": "1", "method": "b"}])
    messages, _ = parse_strict(body.encode())
    assert len(messages) == 2


def test_one_bad_batch_element_rejects_the_whole_batch():
    body = json.dumps([{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, {"jsonrpc": "2.0", "id": 2}])
    err = rejected(body)
    assert err.id == 2


def test_accepts_bytearray_and_memoryview():
    assert parse_strict(bytearray(CALL))[0][0].method == "tools/call"
    assert parse_strict(memoryview(CALL))[0][0].method == "tools/call"


def test_error_converts_to_response():
    err = rejected(request(id="r", method=5))
    assert err.to_response() == {"jsonrpc": "2.0", "id": "r", "error": {"code": INVALID_REQUEST, "message": err.message}}


# --- strict parsing properties ----------------------------------------------------------

_json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63), st.floats(allow_nan=False, allow_infinity=False), st.text()
)
_json_values = st.recursive(
    _json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300)
@given(params=st.dictionaries(st.text(max_size=8), _json_values, max_size=5), ensure_ascii=st.booleans())
def test_strict_accepts_what_the_standard_decoder_accepts(params, ensure_ascii):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}, ensure_ascii=ensure_ascii)
    [msg], _ = parse_strict(body.encode())
    assert msg.params == json.loads(body)["params"]


@settings(max_examples=300)
@given(
    params=st.dictionaries(st.text(max_size=5), _json_values, min_size=1, max_size=5),
    data=st.data(),
)
def test_any_repeated_key_is_rejected(params, data):
    key = data.draw(st.sampled_from(sorted(params)))
    encoded = json.dumps(params)
    # Repeat one key by appending it again at the end of the params object.
    body = '{"jsonrpc":"2.0","id":1,"method":"x","params":%s,%s:0}' % (encoded[:-1], json.dumps(key)) + "}"
    with pytest.raises(JsonRpcParseError) as info:
        parse_strict(body.encode())
    assert info.value.code == PARSE_ERROR


# --- lenient --------------------------------------------------------------------------------


def test_lenient_single_and_batch():
    msg = parse_lenient(b'{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}')
    assert isinstance(msg, Message) and msg.kind == "response"
    batch = parse_lenient('[{"jsonrpc":"2.0","method":"notifications/progress"},{"id":2,"error":{"code":1}}]')
    assert [m.kind for m in batch] == ["notification", "error"]


def test_lenient_server_request():
    msg = parse_lenient(b'{"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage","params":{}}')
    assert (msg.kind, msg.method) == ("request", "sampling/createMessage")


def test_lenient_tolerates_what_strict_refuses():
    msg = parse_lenient(b'{"jsonrpc":"2.0","id":1.5,"result":{"a":1,"a":2}}')
    assert msg.result == {"a": 2}


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b"1",
        b"[1]",
        b'{"jsonrpc":"2.0"}',
        b'{"id":1,"result":{},"error":{"code":1,"message":"m"}}',
        b'{"id":1,"method":"x","result":{}}',
        b'{"id":1,"method":7}',
        b"\xff",
        b"[" * 200_000,
    ],
)
def test_lenient_rejects_what_is_not_json_rpc(body):
    with pytest.raises(JsonRpcParseError):
        parse_lenient(body)


# --- method names ------------------------------------------------------------------------------


def test_known_methods_cover_every_revision():
    for method in [
        "initialize",
        "ping",
        "tools/call",
        "tools/list",
        "resources/templates/list",
        "logging/setLevel",
        "completion/complete",
        "sampling/createMessage",
        "elicitation/create",
        "roots/list",
        "tasks/get",
        "tasks/result",
        "tasks/list",
        "tasks/cancel",
        "notifications/elicitation/complete",
        "notifications/tasks/status",
        "notifications/roots/list_changed",
    ]:
        assert method in KNOWN_METHODS
    assert "elicitation/create" not in METHODS_BY_REVISION["2025-03-26"]
    assert "tasks/get" in METHODS_BY_REVISION["2025-11-25"]


@pytest.mark.parametrize("method", sorted(KNOWN_METHODS))
def test_canonical_method_exact(method):
    assert canonical_method(method) == method


@pytest.mark.parametrize(
    "disguised",
    [
        "Tools/Call",
        "TOOLS/CALL",
        "tools/call ",
        " tools/call",
        "tools/ call",
        "tools/call\n",
        "tools/call\t",
        "tools\uff0fcall",  # fullwidth solidus
        "\uff54ools/call",  # fullwidth t
        "tools\u2215call",  # division slash
        "tools/call\u200b",  # zero-width space
        "tools/\u00adcall",  # soft hyphen
        "\ufefftools/call",
        "tools/call\x00",
        "tools/call\u3000",  # ideographic space
        "logging/setlevel",
        "sampling/createmessage",
        "notifications/Initialized",
    ],
)
def test_canonical_method_refuses_disguised_known_methods(disguised):
    with pytest.raises(JsonRpcParseError) as info:
        canonical_method(disguised)
    assert info.value.code in (INVALID_REQUEST, -32601)


@pytest.mark.parametrize("method", ["tools/frobnicate", "", "rpc.discover", "x/tools/call", "tools/calls"])
def test_canonical_method_unknown(method):
    assert canonical_method(method) is None


def test_known_methods_stay_distinct_after_folding():
    from mcpgw.protocol.mcp_methods import _fold_method

    assert len({_fold_method(m) for m in KNOWN_METHODS}) == len(KNOWN_METHODS)


def test_canonical_method_very_long_disguise():
    with pytest.raises(JsonRpcParseError):
        canonical_method("tools/call" + "\u200b" * 100_000)


# --- serialization ----------------------------------------------------------------------------------


def test_dumps_compact_utf8():
    assert dumps({"a": [1, "é"], "b": None}) == '{"a":[1,"é"],"b":null}'.encode()


def test_dumps_refuses_nan_and_lone_surrogates():
    with pytest.raises(ValueError):
        dumps({"v": float("nan")})
    with pytest.raises(ValueError):
        dumps({"v": "\ud800"})


def test_error_response_shape():
    assert error_response(1, -32601, "nope") == {"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "nope"}}
    assert error_response(None, -32700, "bad", data={"x": 1})["error"]["data"] == {"x": 1}


def test_removed_requests_are_absent_from_their_revision_and_known_before_it():
    from mcpgw.protocol.jsonrpc import METHODS_BY_REVISION, REMOVED_REQUESTS_BY_REVISION, removed_in

    revisions = list(METHODS_BY_REVISION)
    for revision, removed in REMOVED_REQUESTS_BY_REVISION.items():
        earlier = frozenset().union(*(METHODS_BY_REVISION[r] for r in revisions[:revisions.index(revision)]))
        assert removed <= earlier and not removed & METHODS_BY_REVISION[revision]
    assert removed_in("resources/subscribe", "2026-07-28") and removed_in("tasks/result", "2026-07-28")
    assert not removed_in("tasks/get", "2026-07-28")  # kept by the tasks extension
    assert not removed_in("resources/subscribe", "2025-11-25") and not removed_in(None, "2026-07-28")
