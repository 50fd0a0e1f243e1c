"""STOMP 1.2 framing: encoder and incremental parser (vdsm_py.transport.stomp)."""

from __future__ import annotations

import pytest

from vdsm_py.transport.stomp import Frame, FrameParser, StompProtocolError, encode, escape, unescape


def parse_all(data: bytes, max_frame_size: int = 1 << 20) -> list[Frame]:
    return FrameParser(max_frame_size).feed(data)


def test_encode_writes_command_headers_content_length_body_and_nul():
    data = encode(Frame("SEND", {"destination": "/q", "reply-to": "r1"}, b'{"a":1}'))
    assert data == b'SEND\ndestination:/q\nreply-to:r1\ncontent-length:7\n\n{"a":1}\0'


def test_encode_without_body_has_no_content_length():
    assert encode(Frame("SUBSCRIBE", {"id": "1", "destination": "d"})) == (
        b"SUBSCRIBE\nid:1\ndestination:d\n\n\0"
    )


def test_encode_ignores_a_stale_content_length_header():
    data = encode(Frame("SEND", {"content-length": "999", "destination": "d"}, b"xy"))
    assert b"999" not in data
    assert parse_all(data)[0].body == b"xy"


def test_encode_escapes_header_names_and_values():
    data = encode(Frame("MESSAGE", {"a:b": "x\ny\rz\\w:v"}, b""))
    assert data == b"MESSAGE\na\\cb:x\\ny\\rz\\\\w\\cv\n\n\0"


def test_connect_and_connected_headers_are_not_escaped():
    data = encode(Frame("CONNECT", {"host": "h:1", "login": "a\\b"}))
    assert data == b"CONNECT\nhost:h:1\nlogin:a\\b\n\n\0"
    frame = parse_all(b"CONNECTED\nserver:x\\y:z\n\n\0")[0]
    assert frame.headers == {"server": "x\\y:z"}


def test_connect_header_with_newline_cannot_be_encoded():
    with pytest.raises(ValueError):
        encode(Frame("CONNECT", {"host": "a\nb"}))


@pytest.mark.parametrize("text", ["", "plain", "a:b", "c\\d", "line\nbreak\r", "\\c\\n:"])
def test_escape_round_trips(text):
    assert unescape(escape(text)) == text
    frame = parse_all(encode(Frame("SEND", {"k" + text: text}, b"")))[0]
    assert frame.headers == {"k" + text: text}


def test_round_trip_of_binary_body_with_nul_bytes():
    body = bytes(range(256)) * 3
    frame = parse_all(encode(Frame("SEND", {"destination": "d"}, body)))[0]
    assert frame.body == body
    assert frame.headers["content-length"] == str(len(body))


def test_body_without_content_length_ends_at_first_nul():
    frames = parse_all(b"SEND\ndestination:d\n\nhello\0MESSAGE\n\n\0")
    assert [(f.command, f.body) for f in frames] == [("SEND", b"hello"), ("MESSAGE", b"")]


def test_heartbeat_eols_between_frames_are_skipped_and_counted():
    parser = FrameParser()
    frames = parser.feed(b"\n\r\n\nSEND\n\nA\0\n\r\nSEND\n\nB\0\n")
    assert [f.body for f in frames] == [b"A", b"B"]
    assert parser.heartbeats == 6
    assert parser.buffered == 0


def test_crlf_line_endings_are_accepted():
    frames = parse_all(b"SEND\r\ndestination:d\r\ncontent-length:2\r\n\r\nok\0")
    assert frames == [Frame("SEND", {"destination": "d", "content-length": "2"}, b"ok")]


def test_mixed_line_endings_find_the_first_empty_line():
    frames = parse_all(b"SEND\n\r\n\nx\0")
    assert frames[0].headers == {}
    assert frames[0].body == b"\nx"


def test_repeated_header_keeps_the_first_value():
    assert parse_all(b"SEND\nk:1\nk:2\n\n\0")[0].headers == {"k": "1"}


def test_header_value_may_contain_colon():
    assert parse_all(b"SEND\nk:a:b\n\n\0")[0].headers == {"k": "a:b"}


def test_several_frames_in_one_chunk():
    one = encode(Frame("SEND", {"destination": "d"}, b"1"))
    two = encode(Frame("SEND", {"destination": "d"}, b"22"))
    assert [f.body for f in parse_all(one + two + one)] == [b"1", b"22", b"1"]


@pytest.mark.parametrize("with_length", [True, False])
def test_frames_fed_byte_by_byte(with_length):
    frames_in = [
        Frame("SEND", {"destination": "a\nb", "reply-to": "r"}, b'[{"x":1}]'),
        Frame("SUBSCRIBE", {"id": "1", "destination": "q"}, b""),
    ]
    data = b"\r\n".join(encode(f) for f in frames_in) + b"\n"
    if not with_length:
        data = data.replace(b"content-length:9\n", b"")
    parser = FrameParser()
    out = []
    for i in range(len(data)):
        out += parser.feed(data[i : i + 1])
    assert [(f.command, f.body) for f in out] == [(f.command, f.body) for f in frames_in]
    assert out[0].headers["destination"] == "a\nb"
    assert parser.buffered == 0


def test_frame_split_at_every_boundary():
    data = encode(Frame("SEND", {"destination": "d\\x", "h": "v"}, b"body\0with nul")) * 2
    for cut in range(1, len(data)):
        parser = FrameParser()
        frames = parser.feed(data[:cut]) + parser.feed(data[cut:])
        assert [f.body for f in frames] == [b"body\0with nul"] * 2, cut


def test_partial_frame_stays_buffered_until_complete():
    parser = FrameParser()
    assert parser.feed(b"SEND\ncontent-length:5\n\nab") == []
    assert parser.buffered > 0
    assert parser.feed(b"cde") == []
    assert [f.body for f in parser.feed(b"\0")] == [b"abcde"]


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"SEND\nno-colon-here\n\n\0", "malformed header"),
        (b"SEND\n:empty-name\n\n\0", "malformed header"),
        (b"SEND\nk:bad\\tescape\n\n\0", "invalid escape"),
        (b"SEND\nk:trailing\\\n\n\0", "invalid escape"),
        (b"SEND\ncontent-length:abc\n\n\0", "content-length"),
        (b"SEND\ncontent-length:-1\n\n\0", "content-length"),
        (b"SEND\ncontent-length:2\n\nabc\0", "not followed by NUL"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "malformed command"),
        (b"\n\nSEND\nk:\xff\xfe\n\n\0", "UTF-8"),
        (b"\rX", "carriage return"),
    ],
)
def test_malformed_frames_raise_protocol_error(data, reason):
    parser = FrameParser()
    with pytest.raises(StompProtocolError, match=reason):
        parser.feed(data)
    with pytest.raises(StompProtocolError):  # the stream stays broken
        parser.feed(b"SEND\n\n\0")


def test_frame_over_the_limit_is_refused():
    data = encode(Frame("SEND", {"destination": "d"}, b"x" * 200))
    with pytest.raises(StompProtocolError, match="size limit"):
        parse_all(data, max_frame_size=100)
    assert len(parse_all(data, max_frame_size=len(data))) == 1


def test_announced_oversize_body_is_refused_before_it_arrives():
    parser = FrameParser(max_frame_size=1000)
    with pytest.raises(StompProtocolError, match="size limit"):
        parser.feed(b"SEND\ncontent-length:100000\n\n")


def test_unterminated_body_is_refused_once_buffer_passes_the_limit():
    parser = FrameParser(max_frame_size=1000)
    parser.feed(b"SEND\n\n")
    parser.feed(b"x" * 900)
    with pytest.raises(StompProtocolError, match="size limit"):
        parser.feed(b"x" * 200)


def test_endless_headers_are_refused_once_buffer_passes_the_limit():
    parser = FrameParser(max_frame_size=1000)
    with pytest.raises(StompProtocolError, match="size limit"):
        for _ in range(100):
            parser.feed(b"header:value\n")


def test_limit_applies_to_each_frame_not_to_the_chunk():
    one = encode(Frame("SEND", {"destination": "d"}, b"x" * 50))
    frames = parse_all(one * 10, max_frame_size=len(one))
    assert len(frames) == 10
