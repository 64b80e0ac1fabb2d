"""Files written safely: atomic replace (a reader never sees half a file) and zip extraction that
cannot escape its folder or unpack a bomb. The one place either is written.
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import threading
import zipfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator

TEMP_MARK = ".tmp."
ZIP_MAX_RATIO = 20        # a zip may unpack to 20× its size: audio barely compresses, zip bombs reach 1000×
_DRIVE = re.compile(r"^[A-Za-z]:")      # C:foo / C:\foo: absolute (or drive-relative) on Windows


def megabytes(n_bytes: float) -> str:
    mb = n_bytes / 2**20
    return f"{mb:.0f} MB" if mb >= 10 else f"{mb:.3g} MB"


# -- atomic write-then-replace --------------------------------------------------------------------------

def temp_beside(path: Path, suffix: str | None = None) -> Path:
    """A temp name beside `path`, unique per process and thread, marked `.tmp.` (is_temp: backup, doctor
    and the library skip such files) and ending in `suffix`: by default the target's, since writers pick
    the format from it; "" keeps it out of a glob for the target's kind (a cache pruned meanwhile)."""
    suffix = path.suffix if suffix is None else suffix
    return path.with_name(f"{path.stem}{TEMP_MARK}{os.getpid()}-{threading.get_ident()}{suffix}")


def is_temp(path: Path) -> bool:
    """A half-written file (temp_beside), never data."""
    return TEMP_MARK in path.name


@contextmanager
def atomic_write(path: Path, tmp: Path | None = None, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temp path to write `path` through; when the block ends it replaces `path` in one rename,
    when it raises the temp file is removed. `tmp` names the temp file (default: temp_beside(path, suffix))."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp or temp_beside(path, suffix)
    try:
        yield tmp
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, data: bytes, suffix: str | None = None) -> None:
    with atomic_write(path, suffix=suffix) as tmp:
        tmp.write_bytes(data)


def replace_dir(src: Path, dst: Path) -> None:
    """Put folder `src` where `dst` is (the old one is moved aside first: a rename cannot replace a folder)."""
    old = dst.with_name(dst.name + ".old")
    if dst.exists():
        if old.exists():
            shutil.rmtree(old)
        dst.rename(old)
    src.rename(dst)
    if old.exists():
        shutil.rmtree(old)


def copy_dir_atomic(src: Path, dst: Path, ignore=None) -> None:
    """Copy folder `src` to `dst` through atomic_dir (`ignore`: as shutil.copytree's)."""
    with atomic_dir(dst) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True, ignore=ignore)


@contextmanager
def atomic_dir(folder: Path) -> Iterator[Path]:
    """Yield a fresh `<folder>.tmp` to fill; when the block ends it replaces `folder` (replace_dir)."""
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():                 # left by a killed writer
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    yield tmp
    replace_dir(tmp, folder)


# -- zip extraction ------------------------------------------------------------------------------------

class TooLarge(ValueError):
    """More bytes than allowed (a zip entry or an audio file)."""


Plan = tuple[list[tuple[zipfile.ZipInfo, Path]], list[tuple[str, str]]]


def unsafe_name(name: str, root: Path) -> bool:
    """A zip entry name that could land outside `root` (resolved): absolute, `..`, a drive letter,
    backslashes used as separators, or anything that resolves (through symlinks) elsewhere."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if not pure.parts or pure.is_absolute() or ".." in pure.parts or _DRIVE.match(name):
        return True
    return not (root / pure).resolve().is_relative_to(root)


def plan_zip(archive: zipfile.ZipFile, dest: Path, max_entry_bytes: int | None = None,
             max_total_bytes: int | None = None) -> Plan:
    """From the zip's directory alone, before anything is written: (entry, target) pairs to extract,
    and (entry name, why) for those refused: paths escaping `dest` (zip-slip), symbolic links, a name
    held twice or both a file and a folder, entries over the size limit once unpacked, and whatever
    would take the total past `max_total_bytes`. None: no limit."""
    root = dest.resolve()
    infos = archive.infolist()
    keys = [PurePosixPath(i.filename.replace("\\", "/")).as_posix().rstrip("/") for i in infos]
    folders = {p.as_posix() for k in keys for p in PurePosixPath(k).parents}
    keep: list[tuple[zipfile.ZipInfo, Path]] = []
    refused: list[tuple[str, str]] = []
    seen: set[str] = set()
    total = 0
    for info, key in zip(infos, keys):
        why = _refusal(info, key, root, seen, folders, max_entry_bytes)
        seen.add(key)
        if why is None and max_total_bytes is not None and total + info.file_size > max_total_bytes:
            why = f"refused: the archive expands to more than {megabytes(max_total_bytes)}; import it in smaller parts"
        if why:
            refused.append((info.filename, why))
        elif not info.is_dir():
            total += info.file_size
            keep.append((info, (root / key).resolve()))
    return keep, refused


def _refusal(info: zipfile.ZipInfo, key: str, root: Path, seen: set[str], folders: set[str],
             max_entry_bytes: int | None) -> str | None:
    if unsafe_name(info.filename, root):
        return "refused: unsafe path, it escapes the archive (zip-slip)"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "refused: a symbolic link"
    if key in seen:
        return "refused: the archive holds this name twice"
    if not info.is_dir() and key in folders:
        return "refused: this name is both a file and a folder"
    if max_entry_bytes is not None and info.file_size > max_entry_bytes:
        return f"{megabytes(info.file_size)} unzipped is over the {megabytes(max_entry_bytes)} limit"
    return None


def zip_budget(path: Path, max_entry_bytes: int) -> int:
    """How much a zip may unpack to in all: the per-file limit, or ZIP_MAX_RATIO × its size if more."""
    return max(max_entry_bytes, ZIP_MAX_RATIO * path.stat().st_size)


def extract_entries(archive: zipfile.ZipFile, keep: Iterable[tuple[zipfile.ZipInfo, Path]],
                    max_entry_bytes: int | None = None) -> list[tuple[str, str]]:
    """Write the planned entries, each copy capped (at its declared size when no limit is given);
    returns (entry name, why) for those that failed."""
    failed = []
    for info, target in keep:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src:
                _copy_capped(src, target, info.file_size if max_entry_bytes is None else max_entry_bytes)
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, TooLarge) as exc:
            failed.append((info.filename, f"corrupt zip entry ({exc})"))
    return failed


def _copy_capped(src, target: Path, limit: int) -> None:
    """Copy at most `limit` bytes (a zip's directory can lie); past that, refuse and leave nothing."""
    copied = 0
    try:
        with open(target, "wb") as out:
            while chunk := src.read(1 << 20):
                copied += len(chunk)
                if copied > limit:
                    raise TooLarge(f"more than the {megabytes(limit)} limit once unzipped")
                out.write(chunk)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
