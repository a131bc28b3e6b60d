"""Property-based checks of frame decoding: any bytes give messages or ``FrameError``, never
another exception; frames split anywhere decode to the same messages; a header never makes the
decoder allocate more than the bytes that arrived (beyond one object chunk)."""

from __future__ import annotations

import struct
import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from rtml._transport._channel import RAW, FrameError, _Decoder, encode, raw_header

values = st.recursive(
    st.none() | st.integers() | st.text(max_size=8) | st.binary(max_size=32),
    lambda c: st.lists(c, max_size=3).map(tuple) | st.lists(c, max_size=3),
    max_leaves=8,
)
messages = st.lists(st.tuples(st.text(max_size=6), values), min_size=1, max_size=4)


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=2048), cut=st.integers(0, 2048))
def test_any_bytes_give_messages_or_a_frame_error(data, cut):
    dec = _Decoder(1 << 20)
    try:
        dec.feed(data[:cut])
        dec.feed(data[cut:])
    except FrameError:
        pass


@settings(max_examples=100, deadline=None)
@given(batches=st.lists(messages, min_size=1, max_size=4), raw=st.binary(max_size=300),
       cuts=st.lists(st.integers(0, 4000), max_size=5))  # fmt: skip
def test_frames_split_anywhere_decode_the_same(batches, raw, cuts):
    stream = b"".join(encode(b) for b in batches) + raw_header(7, len(raw)) + raw
    want = [m for b in batches for m in b] + [("raw", 7, raw)]
    dec = _Decoder()
    got = []
    prev = 0
    for c in [*sorted(min(c, len(stream)) for c in cuts), len(stream)]:
        got += dec.feed(stream[prev:c])
        prev = c
    assert got == want


def test_a_huge_raw_header_allocates_only_what_arrives():
    dec = _Decoder()
    header = struct.pack("<I", RAW | 0x7F000000) + struct.pack("<Q", 1)
    tracemalloc.start()
    try:
        assert dec.feed(header + b"x" * 1000) == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # not the 2 GiB the header announces
