"""FileSource and FileSink, in-process: formats, exact resume from byte offsets, follow mode,
malformed lines, missing files, at-least-once appends and idempotent exactly-once epochs."""

from __future__ import annotations

import json
import os
import pickle

import pytest

from rtml.stream import ConnectorError, Malformed, StreamConfigError
from rtml.stream._file import FileSink, FileSource


def read_all(reader, batch=100):
    out = []
    while not reader.done():
        out.extend(reader.read(batch, 0.0))
    return out


def test_json_lines_with_malformed_and_blank_lines(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"x": 1}\n\n{bad\n[2]\n"\xe9"')  # last line without a line break
    src = FileSource(str(p))
    (part,) = src.partitions()
    assert part == str(p)
    r = src.open(part, None)
    out = read_all(r)
    r.close()
    assert out[0] == {"x": 1}
    assert out[2] == [2]
    assert out[3] == "\xe9"
    assert isinstance(out[1], Malformed)
    assert out[1].raw == "{bad"
    assert out[1].where == f"{p}:3"
    assert "invalid JSON" in out[1].reason
    assert len(out) == 4


def test_resume_from_every_offset_is_exact(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(20)))
    src = FileSource(str(p))
    for cut in range(0, 21, 3):
        r = src.open(str(p), None)
        first = r.read(cut, 0.0) if cut else []
        off = pickle.loads(pickle.dumps(r.offset()))
        r.close()
        r = src.open(str(p), off)
        rest = read_all(r, batch=7)
        r.close()
        assert [e["i"] for e in first + rest] == list(range(20))


def test_malformed_line_number_after_resume(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_bytes(b"1\n2\n\xff\n")
    src = FileSource(str(p))
    r = src.open(str(p), None)
    assert r.read(2, 0.0) == [1, 2]
    off = r.offset()
    r.close()
    r = src.open(str(p), off)
    (bad,) = r.read(10, 0.0)
    r.close()
    assert isinstance(bad, Malformed)
    assert bad.where == f"{p}:3"
    assert "UTF-8" in bad.reason


def test_csv_rows_as_dicts_and_resume_keeps_header(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text('id,name\n1,ann\n2,"b,ob"\n3\n4,dee\n')
    src = FileSource(str(p), format="csv")
    r = src.open(str(p), None)
    first = r.read(1, 0.0)
    off = r.offset()
    r.close()
    assert first == [{"id": "1", "name": "ann"}]
    r = src.open(str(p), off)
    rest = read_all(r)
    r.close()
    assert rest[0] == {"id": "2", "name": "b,ob"}
    assert rest[2] == {"id": "4", "name": "dee"}
    assert isinstance(rest[1], Malformed)
    assert rest[1].where == f"{p}:4"


def test_lines_glob_and_list_partitions(tmp_path):
    for n in ("b.txt", "a.txt"):
        (tmp_path / n).write_text(f"{n}-1\r\n{n}-2\n")
    src = FileSource([str(tmp_path / "*.txt"), str(tmp_path / "a.txt")], format="lines")
    parts = src.partitions()
    assert parts == [str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]
    r = src.open(parts[1], None)
    assert read_all(r) == ["b.txt-1", "b.txt-2"]
    r.close()


def test_missing_file_and_empty_glob_name_the_path(tmp_path):
    with pytest.raises(ConnectorError, match=r"nope\.jsonl"):
        FileSource(str(tmp_path / "nope.jsonl")).partitions()
    with pytest.raises(ConnectorError, match=r"\*.csv"):
        FileSource(str(tmp_path / "*.csv")).partitions()
    with pytest.raises(ConnectorError, match="gone"):
        FileSource(str(tmp_path / "x")).open(str(tmp_path / "gone"), None)
    with pytest.raises(StreamConfigError, match="format"):
        FileSource("x", format="xml")


def test_follow_tails_a_growing_file_and_holds_back_a_partial_line(tmp_path):
    p = tmp_path / "live.jsonl"
    p.write_text('{"n": 1}\n{"n": ')
    src = FileSource(str(p), follow=True, poll_interval=0.01)
    r = src.open(str(p), None)
    assert r.read(10, 0.05) == [{"n": 1}]
    assert r.read(10, 0.05) == []  # the partial line is held back
    assert not r.done()
    with open(p, "a") as f:
        f.write('2}\n{"n": 3}\n')
    assert r.read(10, 1.0) == [{"n": 2}, {"n": 3}]
    off = r.offset()
    assert off == p.stat().st_size
    assert r.read(10, 0.02) == []
    assert not r.done()
    r.close()


def test_follow_refuses_a_truncated_or_replaced_file(tmp_path):
    p = tmp_path / "live.txt"
    p.write_text("a\nb\n")
    src = FileSource(str(p), format="lines", follow=True, poll_interval=0.01)
    r = src.open(str(p), None)
    assert r.read(10, 0.0) == ["a", "b"]
    p.write_text("c\n")  # truncated in place
    with pytest.raises(ConnectorError, match="shrank"):
        r.read(10, 0.0)
    r.close()
    r = src.open(str(p), None)
    assert r.read(10, 0.0) == ["c"]
    new = tmp_path / "new.txt"
    new.write_text("c\nd\ne\n")
    os.replace(new, p)  # rotated: another file at the path
    with pytest.raises(ConnectorError, match="replaced"):
        r.read(10, 0.0)
    r.close()


def test_follow_waits_for_a_csv_header(tmp_path):
    p = tmp_path / "live.csv"
    p.write_text("a,b")
    r = FileSource(str(p), format="csv", follow=True, poll_interval=0.01).open(str(p), None)
    assert r.read(10, 0.02) == []
    with open(p, "a") as f:
        f.write("\n1,2\n")
    assert r.read(10, 1.0) == [{"a": "1", "b": "2"}]
    r.close()


def test_sink_at_least_once_appends_and_resumes_csv_header(tmp_path):
    sink = FileSink(tmp_path / "out", format="csv")
    assert not sink.exactly_once
    w = sink.open("flow/sink/0", 0, 2)
    w.write([{"a": 1, "b": "x"}])
    w.flush()
    w.close()
    w = sink.open("flow/sink/0", 0, 2)
    w.write([{"b": "y", "a": 2}])
    with pytest.raises(ConnectorError, match="keys"):
        w.write([{"a": 3}])
    w.close()
    path = tmp_path / "out" / "part-0.csv"
    assert path.read_text() == "a,b\n1,x\n2,y\n"
    src = FileSource(str(path), format="csv")
    r = src.open(str(path), None)
    assert read_all(r) == [{"a": "1", "b": "x"}, {"a": "2", "b": "y"}]
    r.close()


def test_sink_exactly_once_is_idempotent_per_writer_and_epoch(tmp_path):
    sink = FileSink(tmp_path, format="json", exactly_once=True)
    assert sink.exactly_once
    w = sink.open("flow/sink/0", 0, 1)
    w.write_epoch(1, [{"e": 1}])
    w.write_epoch(2, [{"e": 2}])
    w.write_epoch(2, [{"e": "again"}])
    w.write_epoch(3, [])
    w.close()
    w = sink.open("flow/sink/0", 0, 1)  # after a restart: 1 and 2 are skipped, 4 written
    w.write_epoch(1, [{"e": "again"}])
    w.write_epoch(2, [{"e": "again"}])
    w.write_epoch(4, [{"e": 4}, {"e": 5}])
    w.close()
    other = sink.open("flow/sink/1", 1, 2)
    other.write_epoch(1, [{"e": "other"}])
    other.close()
    names = sorted(os.listdir(tmp_path))
    assert names == [
        "part-flow%2Fsink%2F0-0000000001.jsonl",
        "part-flow%2Fsink%2F0-0000000002.jsonl",
        "part-flow%2Fsink%2F0-0000000004.jsonl",
        "part-flow%2Fsink%2F1-0000000001.jsonl",
    ]
    got = [json.loads(line)["e"] for n in names[:3] for line in (tmp_path / n).read_text().split()]
    assert got == [1, 2, 4, 5]


def test_sink_rejects_unencodable_records(tmp_path):
    w = FileSink(tmp_path, exactly_once=True).open("w", 0, 1)
    with pytest.raises(ConnectorError, match="JSON"):
        w.write_epoch(1, [object()])
    w.close()
    assert os.listdir(tmp_path) == []
