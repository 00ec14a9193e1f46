"""Uploaded bytes without holding them: a request's files stay where they arrived (Django's upload
spool) or in one temporary file per request (ZIP members, re-oriented images), and are read one at
a time, when needed. That keeps a request's memory to about one image, whatever it uploads.
"""

import io
import tempfile
from collections.abc import Iterable, Iterator

CHUNK_BYTES = 64 * 1024


class UploadedFile:
    """One file of a request, by the name it pairs with rows under; `size` bytes at `offset` of `source`.

    Built from bytes (tests, the command line), from a Django upload (`from_django`), or by a `Spool`.
    """

    def __init__(self, name: str, data: bytes | None = None, *, source=None, offset: int = 0,
                 size: int | None = None):
        if source is None:
            data = data or b""
            source, size = io.BytesIO(data), len(data)
        self.name, self.source, self.offset = name, source, offset
        self.size = size if size is not None else _size_of(source)

    @classmethod
    def from_django(cls, upload) -> "UploadedFile":
        return cls(upload.name or "", source=upload.file, size=upload.size)

    def read(self) -> bytes:
        """All of it. Callers check `size` against their limit first."""
        self.source.seek(self.offset)
        return self.source.read(self.size)

    def stream(self):
        """The source as a seekable file, for readers that take one (ZipFile); only whole files have it."""
        if self.offset:
            raise ValueError("a part of a spool is not a file of its own")
        self.source.seek(0)
        return self.source

    @property
    def data(self) -> bytes:
        return self.read()

    def __repr__(self):
        return f"UploadedFile({self.name!r}, {self.size} bytes)"


def _size_of(source) -> int:
    position = source.seek(0, io.SEEK_END)
    source.seek(0)
    return position


class Spool:
    """One temporary file that many pieces are appended to (one descriptor, not one per ZIP member).

    It is deleted when closed or garbage-collected, i.e. once the request that made it is done.
    """

    def __init__(self):
        self._file = None

    def add(self, name: str, chunks: Iterable[bytes]) -> UploadedFile:
        """Appends the chunks as one file. If the iterator raises, what it wrote is dropped and the error passes on."""
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="genhub-upload-")
        start = self._file.seek(0, io.SEEK_END)
        try:
            for chunk in chunks:
                self._file.write(chunk)
        except BaseException:
            self._file.truncate(start)
            raise
        return UploadedFile(name, source=self._file, offset=start, size=self._file.tell() - start)

    def add_bytes(self, name: str, data: bytes) -> UploadedFile:
        return self.add(name, [data])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def chunks_of(upload: UploadedFile) -> Iterator[bytes]:
    upload.source.seek(upload.offset)
    left = upload.size
    while left > 0:
        chunk = upload.source.read(min(CHUNK_BYTES, left))
        if not chunk:
            return
        left -= len(chunk)
        yield chunk
