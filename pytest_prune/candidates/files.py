"""What a candidate file is, and whether it arrived intact.

Both kinds of candidate are zip archives when written by a current torch (``torch.save`` and
``torch.export.save``), and every zip entry carries a CRC-32 of its bytes. ``torch.load`` does not
check those CRCs: a flipped byte inside a tensor loads silently as a slightly different weight. So
every entry is checked here, with :mod:`zipfile`, before torch sees the file; the bytes checked are
the bytes handed on, so a file replaced meanwhile cannot slip through.

Files in torch's legacy (pre-1.6, non-zip) format carry no checksum: they are passed to the
state-dict reader as they are, and only damage that breaks their structure is caught.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import WeightsError

FileKind = Literal["state_dict", "exported", "legacy"]
_ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True)
class CandidateFile:
    """A candidate file's bytes, checked; ``records`` are the zip entries below the top folder."""

    path: Path
    data: bytes
    kind: FileKind
    records: dict[str, str]  # record name (e.g. 'archive_format') → full zip entry name

    def read(self, record: str) -> bytes:
        with zipfile.ZipFile(io.BytesIO(self.data)) as archive:
            return archive.read(self.records[record])


def _damaged(path: Path, why: str) -> WeightsError:
    return WeightsError(
        f"candidate file {str(path)!r} is truncated or damaged ({why}); copy or export it again"
    )


def _records(path: Path, names: list[str]) -> dict[str, str]:
    """Entry names without the archive's top folder (torch writes every entry under one)."""
    records: dict[str, str] = {}
    for name in names:
        top, sep, record = name.partition("/")
        if not sep or not record:
            raise _damaged(path, f"entry {name!r} is outside the archive's top folder")
        if record in records:
            # Two readers could pick different copies of a duplicated entry: refuse, never guess.
            raise _damaged(path, f"entry {record!r} appears twice")
        records[record] = name
    if len({name.partition("/")[0] for name in names}) > 1:
        raise _damaged(path, "its entries lie under several top folders")
    return records


def open_candidate_file(path: str | Path) -> CandidateFile:
    """Read ``path``, check every zip entry's CRC, and tell a state dict from an exported program.

    Raises :class:`WeightsError` for a missing, empty, truncated or altered file.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"candidate file {str(path)!r} does not exist")
    data = path.read_bytes()
    if not data:
        raise _damaged(path, "it is empty")
    if not data.startswith(_ZIP_MAGIC):
        return CandidateFile(path, data, "legacy", {})
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
            first = min((info.header_offset for info in archive.infolist()), default=0)
            bad = archive.testzip()
    except Exception as exc:  # zipfile raises many types (BadZipFile, zlib.error, EOFError, ...)
        raise _damaged(path, f"{type(exc).__name__}: {exc}") from None
    if first != 0:
        # zipfile tolerates bytes before an archive, torch's reader does not: a directory that
        # starts mid-file is another archive (a .pt2 stores its sample inputs as one) or a trap.
        raise _damaged(path, f"its zip directory starts its entries at byte {first}, not 0")
    if bad is not None:
        raise WeightsError(
            f"candidate file {str(path)!r}: entry {bad!r} fails its CRC check, so the file was "
            "altered or damaged after it was written; copy or export it again"
        )
    records = _records(path, names)
    if "archive_format" in records:
        return CandidateFile(path, data, "exported", records)
    if "data.pkl" in records:
        return CandidateFile(path, data, "state_dict", records)
    raise WeightsError(
        f"candidate file {str(path)!r} is a zip archive but neither a torch.save file (no "
        "data.pkl) nor a torch.export archive (no archive_format); save the candidate with "
        "torch.save(model.state_dict(), path) or torch.export.save(program, path)"
    )
