"""Uploaded ZIPs of images: unpacked member by member into the request's spool, each member measured
by the bytes it really unpacks to (never what its header declares), stopping at the first limit.
"""

import posixpath
import re
import zipfile

from django.conf import settings

from jobs.uploaded import CHUNK_BYTES, Spool, UploadedFile

ARCHIVE_SUFFIX = ".zip"
# Files that archivers and desktops add on their own; nobody means them as batch items.
ARCHIVE_JUNK_NAMES = {"thumbs.db", "desktop.ini"}
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, NotImplementedError, RuntimeError,
              EOFError)


def _error(message: str, item: str) -> dict:
    return {"field": "images", "message": message, "item": item}


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIX)


def _archive_member_is_junk(path: str) -> bool:
    parts = [part for part in path.split("/") if part]
    return (not parts or parts[0] == "__MACOSX" or any(part.startswith(".") for part in parts)
            or parts[-1].lower() in ARCHIVE_JUNK_NAMES)


def _escapes(path: str) -> bool:
    """An absolute path or one climbing out with `..`: an extractor would write it outside its folder,
    and it is never what a person means as a picture of the batch."""
    parts = re.split(r"[\\/]", path)
    return path.startswith(("/", "\\")) or bool(re.match(r"^[A-Za-z]:", path)) or ".." in parts


class _Refused(Exception):
    """A member stopped while unpacking; the message says why."""


def _unpack(archive: zipfile.ZipFile, info: zipfile.ZipInfo, *, budget: int, where: str):
    """The member's bytes in chunks, counted as they come out of the decompressor."""
    max_bytes, ratio = settings.GENHUB_MAX_IMAGE_BYTES, settings.GENHUB_MAX_ARCHIVE_RATIO
    # Every member, however small, answers to the ratio: a thousand small bombs are still a bomb.
    ratio_limit = ratio * max(1, info.compress_size)
    seen = 0
    with archive.open(info) as member:
        while chunk := member.read(CHUNK_BYTES):
            seen += len(chunk)
            if seen > max_bytes:
                raise _Refused(f"{where} is too large: more than {max_bytes} bytes unpacked, the limit is "
                               f"{max_bytes} bytes")
            if seen > ratio_limit:
                raise _Refused(f"{where} expands more than {ratio}-fold; that looks like a zip bomb, not an image")
            if seen > budget:
                raise _Refused(f"{where} unpacks past the {settings.GENHUB_MAX_ARCHIVE_BYTES} bytes all archives "
                               "of a batch may hold")
            yield chunk


def _archive_members(upload: UploadedFile, budget: int, spool: Spool,
                     errors: list[dict]) -> list[tuple[str, UploadedFile]]:
    """The usable members of one ZIP as (path inside the archive, file named by its base name).

    The whole archive is refused before anything is unpacked when it declares more than the request's
    remaining `budget`; what each member really unpacks to is counted against the same limits.
    """
    max_items, max_bytes = settings.GENHUB_MAX_BATCH_ITEMS, settings.GENHUB_MAX_IMAGE_BYTES
    try:
        archive = zipfile.ZipFile(upload.stream())
        infos = archive.infolist()
    except ZIP_ERRORS:
        errors.append(_error("not a readable ZIP archive", upload.name))
        return []
    escaping = [info.filename for info in infos if _escapes(info.filename)]
    if escaping:
        errors.append(_error(f"{upload.name} holds paths outside the archive (absolute or with '..'): "
                             f"{', '.join(escaping[:10])}{' …' if len(escaping) > 10 else ''}; "
                             "rename them inside the archive", upload.name))
        return []
    infos = [info for info in infos if not info.is_dir() and not _archive_member_is_junk(info.filename)]
    if not infos:
        errors.append(_error("the archive holds no files", upload.name))
        return []
    if len(infos) > max_items:
        errors.append(_error(f"the archive holds {len(infos)} files, the limit is {max_items} per batch",
                             upload.name))
        return []
    declared = sum(info.file_size for info in infos)
    if declared > budget:
        errors.append(_error(f"the archive unpacks to {declared} bytes, more than the "
                             f"{settings.GENHUB_MAX_ARCHIVE_BYTES} bytes all archives of a batch may hold",
                             upload.name))
        return []

    members = []
    for info in infos:
        base = posixpath.basename(info.filename)
        where = f"{upload.name}: {info.filename}"
        if is_archive(base):
            errors.append(_error(f"{where} is an archive inside the archive; nested archives are not expanded",
                                 base))
        elif info.flag_bits & 0x1:
            errors.append(_error(f"{where} is encrypted; upload it without a password", base))
        elif info.file_size > max_bytes:
            errors.append(_error(f"{where} is too large: {info.file_size} bytes, the limit is {max_bytes} bytes",
                                 base))
        else:
            try:
                member = spool.add(base, _unpack(archive, info, budget=budget, where=where))
            except _Refused as exc:
                errors.append(_error(str(exc), base))
                continue
            except ZIP_ERRORS as exc:
                errors.append(_error(f"{where} could not be read: {exc}", base))
                continue
            budget -= member.size
            members.append((info.filename, member))
    return members


def expand_archives(files: list[UploadedFile], spool: Spool | None = None) -> tuple[list[UploadedFile], list[dict]]:
    """Replaces each uploaded ZIP by the files inside it → (files, errors).

    Members are named by their base name, because names are what CSV rows pair with; two members
    (or a member and a directly uploaded file) with the same name are reported, naming both
    places, and only the first is kept so the same clash is not reported twice downstream.
    Directories, `__MACOSX/` and hidden files are skipped. Non-ZIP files pass through unchanged.
    Members are unpacked into `spool` (a new one if not given), which must live as long as they are used.
    """
    spool = spool if spool is not None else Spool()
    errors: list[dict] = []
    expanded: list[UploadedFile] = []
    origin: dict[str, str] = {}  # name → where the kept file of that name came from
    budget = settings.GENHUB_MAX_ARCHIVE_BYTES

    def keep(file: UploadedFile, here: str) -> None:
        if origin.get(file.name, here) != here:
            errors.append(_error(f"two files are named {file.name} ({origin[file.name]}; {here}); "
                                 "names pair files with rows, so rename one", file.name))
            return
        origin[file.name] = here
        expanded.append(file)

    for upload in files:
        if not is_archive(upload.name):
            # Two direct uploads of one name pass through: build_batch reports that clash itself.
            keep(upload, "uploaded directly")
            continue
        for path, member in _archive_members(upload, budget, spool, errors):
            budget -= member.size
            keep(member, f"{upload.name}: {path}")
    return expanded, errors
