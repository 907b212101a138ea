"""Reading task data files: the one error every reader raises, transparent gzip, text lines and JSON.

Every reader goes through `read_text` (bytes -> str: gzip by its magic bytes, strict UTF-8, a BOM dropped),
then `text_lines` or `parse_json`, and reports a bad record with `DataError(path, position, message)`,
position being a 1-based line ("12"), a line and column ("12:5") or a JSON path ("data[3].paragraphs[0]").
"""
from __future__ import annotations

import gzip
import json
import sys
import zlib
from pathlib import Path

from backends.errors import BadInput

GZIP_MAGIC = b"\x1f\x8b"


class DataError(BadInput, ValueError):
    """A data file that cannot be read as its task's format; the message names the file and the position."""

    def __init__(self, path, position, message: str):
        self.path, self.position = Path(path), position
        where = str(path) if position in (None, "") else f"{path}:{position}"
        super().__init__(f"{where}: {message}")


def note(message: str) -> None:
    """One line on stderr about something a reader repaired (the count, never one line per record)."""
    print(f"note: {message}", file=sys.stderr)


def read_text(path) -> str:
    """The file's text: gunzipped when it starts with the gzip magic (whatever its suffix), strict UTF-8, no BOM."""
    path = Path(path)
    if path.is_dir():
        raise DataError(path, None, "is a folder, not a data file")
    if path.exists() and not path.is_file():  # a pipe or device (/dev/zero) would block or never end
        raise DataError(path, None, "is not a regular file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(path, None, f"cannot be read ({exc.strerror or exc})") from None
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError; a cut file ends in EOFError
            raise DataError(path, None, f"broken gzip data ({exc or 'truncated'})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(path, line, f"not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start})") from None
    return text.removeprefix("\ufeff")


def text_lines(text: str) -> list[str]:
    """Lines split at LF (a CR before it dropped), or at CR when the file has no LF at all (old Mac files).

    Only these: str.splitlines would also split at form feeds, U+2028 and other characters that a
    sentence may hold. A file's final line break makes no empty last line.
    """
    separator = "\n" if "\n" in text else "\r"
    lines = text.split(separator)
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def parse_json(path, text: str, line: int | None = None):
    """json.loads with the file (and, for JSONL, its line) named in any error."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if line is None:
            raise DataError(path, f"{exc.lineno}:{exc.colno}", f"invalid JSON ({exc.msg})") from None
        raise DataError(path, line, f"invalid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise DataError(path, line, "JSON nested too deeply") from None


def require(value, kind, path, position, what: str, key: str | None = None):
    """`value` when it is a `kind` (bool is no int here), else DataError naming `what` and what was found.

    The position is `position`, or `position.key` with a key (joined only on failure: readers call this
    once per field of every record).
    """
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool)):
        return value
    names = " or ".join(KIND_NAMES.get(k, k.__name__) for k in kinds)
    where = position if key is None else f"{position}.{key}"
    raise DataError(path, where, f"{what} must be {names}, found {describe(value)}")


KIND_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list",
              dict: "an object", type(None): "null"}


def describe(value) -> str:
    """A short description of a JSON value for an error message."""
    if isinstance(value, (dict, list)):
        return f"{KIND_NAMES[type(value)]} of {len(value)} entries"
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def file_stem(path) -> str:
    """The name without its suffix, a .gz one included: dev.tsv.gz -> dev."""
    path = Path(path)
    return Path(path.stem).stem if path.suffix == ".gz" else path.stem


def no_examples(path, what: str = "examples") -> DataError:
    return DataError(path, None, f"holds no {what}")
