"""Files as a source (JSON lines, CSV, plain lines; optionally tailing a growing file) and as
a sink (appending at-least-once, or one atomically renamed file per epoch for exactly-once)."""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import time
import urllib.parse
from collections.abc import Sequence
from typing import IO, Any

from rtml.stream._connector import Malformed, Sink, SinkWriter, Source, SourceReader
from rtml.stream._errors import ConnectorError, StreamConfigError

__all__ = ["FileSink", "FileSource"]

_FORMATS = ("json", "csv", "lines")
_EXT = {"json": "jsonl", "csv": "csv", "lines": "txt"}


def _check_format(fmt: str, who: str) -> None:
    if fmt not in _FORMATS:
        raise StreamConfigError(f"{who} format must be one of {', '.join(_FORMATS)}, got {fmt!r}")


class FileSource(Source):
    """Records from files, one partition per file (the partition's name is the file's path).

    Args:
        paths: a path, a glob pattern (``"logs/*.jsonl"``), or a list of paths and patterns;
            expanded (sorted) when the dataflow starts.
        format: ``"json"``: one JSON document per line, decoded (blank lines are skipped);
            ``"csv"``: a header line, then one dict per row (values are str);
            ``"lines"``: each line as a str, without its line break.
        follow: tail each file as it grows (like ``tail -f``): a last line without its line
            break is held back until the break arrives, and the partition never ends.
            Otherwise a partition ends at the end of its file (a last line without a line break
            is returned then).
        poll_interval: seconds between looks at a followed file that has nothing new. A
            followed file that shrinks or is replaced at its path raises ConnectorError (its
            offsets would no longer mean anything).

    The offset is the byte position after the last line returned, so a restart resumes
    exactly there. A line that does not decode is returned as a :class:`Malformed` with
    ``where="<path>:<line number>"``. CSV rows are split at line breaks: quoted fields that
    contain a line break are not supported.

    Raises:
        StreamConfigError: an unknown format or a bad poll interval.
        ConnectorError: (from ``partitions``/``open``) a path or pattern matches no file, or a
            file cannot be read.
    """

    def __init__(
        self,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        format: str = "json",
        follow: bool = False,
        poll_interval: float = 0.05,
    ) -> None:
        _check_format(format, "FileSource")
        if not poll_interval > 0:
            raise StreamConfigError(
                f"poll_interval must be a positive number of seconds, got {poll_interval!r}"
            )
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self.paths = [os.fspath(p) for p in paths]
        if not self.paths:
            raise StreamConfigError("FileSource needs at least one path or pattern")
        self.format, self.follow, self.poll_interval = format, follow, poll_interval

    def partitions(self) -> list[str]:
        out: list[str] = []
        for p in self.paths:
            if glob.has_magic(p):
                found = sorted(glob.glob(p))
                if not found:
                    raise ConnectorError(
                        f"FileSource: no file matches {p!r}; check the "
                        f"pattern and the working directory ({os.getcwd()})"
                    )
            elif not os.path.isfile(p):
                raise ConnectorError(
                    f"FileSource: file {p!r} does not exist (or is not a "
                    f"file); check the path and the working directory "
                    f"({os.getcwd()})"
                )
            else:
                found = [p]
            out.extend(f for f in found if f not in out)
        return out

    def open(self, partition: str, offset: Any | None) -> SourceReader:
        try:
            f = open(partition, "rb")  # noqa: SIM115 - closed by the reader
        except OSError as e:
            raise ConnectorError(
                f"FileSource cannot open {partition!r}: {e}; check that it exists and is readable"
            ) from e
        try:
            return _FileReader(
                f, partition, int(offset or 0), self.format, self.follow, self.poll_interval
            )
        except BaseException:
            f.close()
            raise

    def describe(self) -> str:
        return f"FileSource({', '.join(self.paths)})"


class _FileReader(SourceReader):
    def __init__(
        self, f: IO[bytes], path: str, offset: int, fmt: str, follow: bool, poll: float
    ) -> None:
        self._f, self._path, self._fmt, self._follow, self._poll = f, path, fmt, follow, poll
        self._header: list[str] | None = None
        self._done = False
        self._lineno = 0
        if fmt == "csv":
            first = f.readline()
            if not first.endswith(b"\n") and (follow or not first):
                if offset:
                    raise ConnectorError(
                        f"FileSource: {path!r} lost its CSV header (it is "
                        f"shorter than the checkpointed offset {offset})"
                    )
                f.seek(0)  # no complete header yet: wait for it in read()
            else:
                self._header = _csv_row(first)
                self._lineno = 1
                offset = max(offset, f.tell())
        if offset:
            # count the lines before the offset, for line numbers in Malformed
            f.seek(0)
            self._lineno, left = 0, offset
            while left > 0:
                chunk = f.read(min(left, 1 << 20))
                if not chunk:
                    break
                self._lineno += chunk.count(b"\n")
                left -= len(chunk)
            f.seek(offset)
        self._pos = offset

    def _next_line(self) -> bytes | None:
        line = self._f.readline()
        if not line:
            if self._follow:
                self._check_same_file()
            return None
        if not line.endswith(b"\n") and self._follow:
            self._f.seek(self._pos)  # partial line: wait for the rest
            return None
        self._pos += len(line)
        self._lineno += 1
        return line

    def _check_same_file(self) -> None:
        st = os.fstat(self._f.fileno())
        if st.st_size < self._pos:
            raise ConnectorError(
                f"FileSource: {self._path!r} shrank below the read position "
                f"{self._pos} (truncated?); a followed file may only grow"
            )
        try:
            now = os.stat(self._path)
        except OSError:
            return  # removed: what was written stays readable; nothing more will come
        if (now.st_ino, now.st_dev) != (st.st_ino, st.st_dev):
            raise ConnectorError(
                f"FileSource: {self._path!r} was replaced by another file "
                f"(rotated?); a followed file may only grow: give each "
                f"rotated file its own name (and a glob pattern)"
            )

    def _decode(self, line: bytes) -> Any:
        where = f"{self._path}:{self._lineno}"
        try:
            text = line.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as e:
            return Malformed(line, f"not UTF-8: {e}", where)
        if self._fmt == "lines":
            return text
        if self._fmt == "json":
            try:
                return json.loads(text)
            except ValueError as e:
                return Malformed(text, f"invalid JSON: {e}", where)
        if self._header is None:
            self._header = _csv_row(line)
            return _SKIP
        try:
            row = _csv_row(line)
        except csv.Error as e:
            return Malformed(text, f"invalid CSV: {e}", where)
        if len(row) != len(self._header):
            return Malformed(
                text, f"CSV row has {len(row)} fields, the header {len(self._header)}", where
            )
        return dict(zip(self._header, row, strict=True))

    def read(self, max_records: int, timeout: float) -> list[Any]:
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while True:
            while len(out) < max_records:
                try:
                    line = self._next_line()
                except OSError as e:
                    raise ConnectorError(f"FileSource cannot read {self._path!r}: {e}") from e
                if line is None:
                    if not self._follow:
                        self._done = True
                    break
                if self._fmt == "json" and not line.strip():
                    continue
                rec = self._decode(line)
                if rec is not _SKIP:
                    out.append(rec)
            left = deadline - time.monotonic()
            if out or not self._follow or left <= 0 or len(out) >= max_records:
                return out
            time.sleep(min(self._poll, left))

    def offset(self) -> int:
        return self._pos

    def done(self) -> bool:
        return self._done

    def close(self) -> None:
        self._f.close()


_SKIP = object()


def _csv_row(line: bytes) -> list[str]:
    rows = list(csv.reader(io.StringIO(line.decode("utf-8").rstrip("\r\n"), newline="")))
    return rows[0] if rows else []


def _safe(name: str) -> str:
    return urllib.parse.quote(name, safe="")


class FileSink(Sink):
    """Records written to files in a directory (created if missing).

    Args:
        directory: where the files go.
        format: ``"json"`` (one JSON document per line, ``.jsonl``), ``"csv"`` (records are
            dicts; a header from the first record's keys, ``.csv``), ``"lines"`` (``str(record)``
            per line, ``.txt``).
        exactly_once: False: writer ``index`` appends to ``part-<index>.<ext>`` and ``flush``
            (at every checkpoint) fsyncs it; after a recovery records since the last checkpoint
            can appear twice. True: each epoch of a writer becomes its own file
            ``part-<writer id>-<epoch, 10 digits>.<ext>`` (the writer id percent-encoded),
            written to a temporary file, fsynced and renamed into place, so it is complete or
            absent; an epoch whose file exists, or not above the highest epoch file of that
            writer, is skipped (idempotent). An epoch without records writes no file.

    Readers of the output should skip names starting with ``.`` (temporary files).

    Raises:
        StreamConfigError: an unknown format.
        ConnectorError: (from ``open``/``write``) the directory or a file cannot be written.
    """

    def __init__(
        self, directory: str | os.PathLike, *, format: str = "json", exactly_once: bool = False
    ) -> None:
        _check_format(format, "FileSink")
        self.directory, self.format = os.fspath(directory), format
        self.exactly_once = bool(exactly_once)

    def open(self, writer_id: str, index: int, count: int) -> SinkWriter:
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as e:
            raise ConnectorError(f"FileSink cannot create directory {self.directory!r}: {e}") from e
        if self.exactly_once:
            return _EpochFileWriter(self.directory, self.format, _safe(writer_id))
        return _AppendFileWriter(
            os.path.join(self.directory, f"part-{index}.{_EXT[self.format]}"), self.format
        )

    def describe(self) -> str:
        return f"FileSink({self.directory})"


def _encode(
    records: list[Any], fmt: str, fields: list[str] | None, where: str
) -> tuple[str, list[str] | None]:
    """Records as text; for CSV also the header (the given one, or from the first record)."""
    if fmt == "json":
        try:
            return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records), None
        except (TypeError, ValueError) as e:
            raise ConnectorError(
                f"FileSink({where}) cannot encode a record as JSON: {e}; map "
                f"records to JSON-compatible values before the sink"
            ) from e
    if fmt == "lines":
        return "".join(str(r).replace("\n", " ") + "\n" for r in records), None
    buf = io.StringIO()
    for r in records:
        if not isinstance(r, dict):
            raise ConnectorError(
                f"FileSink({where}) in CSV format takes dicts, got "
                f"{type(r).__name__}; map records to dicts before the sink"
            )
        if fields is None:
            fields = [str(k) for k in r]
            csv.writer(buf, lineterminator="\n").writerow(fields)
        if set(map(str, r)) != set(fields):
            raise ConnectorError(
                f"FileSink({where}): record keys {sorted(map(str, r))} differ "
                f"from the CSV header {fields}; give every record the same "
                f"keys"
            )
        row = {str(k): v for k, v in r.items()}
        csv.writer(buf, lineterminator="\n").writerow([row[k] for k in fields])
    return buf.getvalue(), fields


class _AppendFileWriter(SinkWriter):
    def __init__(self, path: str, fmt: str) -> None:
        self._path, self._fmt = path, fmt
        self._fields: list[str] | None = None
        try:
            if fmt == "csv" and os.path.exists(path) and os.path.getsize(path):
                with open(path, "rb") as f:
                    self._fields = _csv_row(f.readline())
            self._f = open(path, "a", encoding="utf-8", newline="")  # noqa: SIM115
        except OSError as e:
            raise ConnectorError(f"FileSink cannot open {path!r} for appending: {e}") from e

    def write(self, records: list[Any]) -> None:
        if not records:
            return
        text, self._fields = _encode(records, self._fmt, self._fields, self._path)
        try:
            self._f.write(text)
        except OSError as e:
            raise ConnectorError(f"FileSink cannot write {self._path!r}: {e}") from e

    def flush(self) -> None:
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
        except OSError as e:
            raise ConnectorError(f"FileSink cannot flush {self._path!r}: {e}") from e

    def close(self) -> None:
        if not self._f.closed:
            try:
                self.flush()
            finally:
                self._f.close()


class _EpochFileWriter(SinkWriter):
    def __init__(self, directory: str, fmt: str, writer: str) -> None:
        self._dir, self._fmt, self._writer = directory, fmt, writer
        self._prefix, self._ext = f"part-{writer}-", f".{_EXT[fmt]}"
        self._last = -1
        for name in os.listdir(directory):
            if name.startswith(self._prefix) and name.endswith(self._ext):
                num = name[len(self._prefix) : -len(self._ext)]
                if num.isdigit():
                    self._last = max(self._last, int(num))

    def path(self, epoch: int) -> str:
        return os.path.join(self._dir, f"{self._prefix}{epoch:010d}{self._ext}")

    def write_epoch(self, epoch: int, records: list[Any]) -> None:
        final = self.path(epoch)
        if epoch <= self._last or os.path.exists(final) or not records:
            return
        text, _ = _encode(records, self._fmt, None, final)
        tmp = os.path.join(self._dir, f".{self._prefix}{epoch:010d}.{os.getpid()}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
            fd = os.open(self._dir, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise ConnectorError(f"FileSink cannot write epoch file {final!r}: {e}") from e
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self._last = epoch
