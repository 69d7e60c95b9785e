"""`invoke logs` with hostile container output: the same cleaning as every other remote string
(no escape or control sequence reaches the terminal raw, no line forged under another host's
label), and every secret masked in its encoded forms too (URL, base64 at any alignment, JSON)."""
from __future__ import annotations

import base64
import io
import json
import re
import threading
from urllib.parse import quote, quote_plus

import pytest

from comfyume_fab.ops.logs import LineSink, Masker

SECRET = "s3cret/Pw+ä&\"x"  # every encoding changes it: /, +, non-ASCII, &, "


def sink(secrets=()):
    out = io.StringIO()
    return LineSink("verda", ["worker", "admin"], out, threading.Lock(), Masker(list(secrets))), out


def shown(data: bytes, secrets=()) -> str:
    s, out = sink(secrets)
    s.feed(data)
    s.flush()
    return out.getvalue()


def test_an_erase_and_carriage_return_cannot_forge_another_hosts_line():
    text = shown(b"worker-1  | loading\x1b[2K\rmello/admin admin logged in\r\n")
    assert text.count("\n") == 1 and text.startswith("verda/worker loading")
    assert "\r" not in text and "\x1b" not in text
    assert "mello/admin admin logged in" in text  # still there to read, after the escaped \r
    assert "\\x0d" in text


@pytest.mark.parametrize("seq", [b"\x1b]0;owned\x07", b"\x1b]0;owned\x1b\\", b"\x1b]8;;http://x\x1b\\link",
                                 b"\x1bP+q\x1b\\", b"\x1b[31m", b"\x1b[?1049h", b"\x1bc", b"\x07", b"\x08\x08",
                                 "\u009b2J".encode(), "\u202e".encode()])
def test_no_escape_or_control_sequence_reaches_the_terminal_raw(seq):
    text = shown(b"worker-1  | a" + seq + b"b\r\n")
    assert text.startswith("verda/worker a") and text.endswith("b\n") and text.count("\n") == 1
    assert not any(ord(c) < 0x20 and c != "\n" or 0x7f <= ord(c) <= 0x9f or c in "\u202e" for c in text), repr(text)


def test_a_secret_split_by_an_escape_sequence_is_masked():
    assert shown(b"worker-1  | pw=s3cr\x1b[0met-pw!\n", ["s3cret-pw!"]) == "verda/worker pw=***\n"


def _b64_inside(prefix: bytes, alphabet=base64.b64encode) -> tuple[str, str]:
    """The secret base64-encoded inside a longer value (`prefix` before it), and the characters of
    that value made of the secret's bits only (the ones that must not be shown)."""
    full = alphabet(prefix + SECRET.encode() + b"|tail").decode()
    first = -(-8 * len(prefix) // 6)  # the first character past the prefix's bits
    last = 8 * (len(prefix) + len(SECRET.encode())) // 6
    return full, full[first:last]


_URL_LOWER = re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), quote(SECRET, safe=""))


@pytest.mark.parametrize("encoded,secret_part", [
    *[(f, f) for f in (quote(SECRET, safe=""), quote(SECRET), quote_plus(SECRET), _URL_LOWER,
                       json.dumps(SECRET)[1:-1], json.dumps(SECRET, ensure_ascii=False)[1:-1])],
    _b64_inside(b""), _b64_inside(b"x"), _b64_inside(b"xy"), _b64_inside(b'{"k": 1}'),
    _b64_inside(b"admin:"), _b64_inside(b"x", base64.urlsafe_b64encode)])
def test_a_secret_is_masked_in_its_encoded_forms(encoded, secret_part):
    text = shown(f"admin-1  | got {encoded} end\n".encode(), [SECRET])
    assert text.startswith("verda/admin got ") and text.endswith(" end\n") and "***" in text
    assert secret_part not in text and secret_part[1:-1] not in text, text


def test_http_basic_credentials_are_masked():
    header = "Authorization: Basic " + base64.b64encode(b"admin:" + SECRET.encode()).decode()
    text = shown(f"admin-1  | {header}\n".encode(), [SECRET])
    assert text.startswith("verda/admin Authorization: Basic YWRtaW46***"), text


def test_short_secrets_do_not_mask_their_encodings_everywhere():
    # a two-character secret's base64 is two characters long: masking it would hide ordinary text
    assert shown(b"worker-1  | cHc ok\n", ["pw"]) == "verda/worker cHc ok\n"
