"""The files of a folder or a .zip, read in place: what a folder source and predict see.

Hidden files (`.DS_Store`, `._*`, `Thumbs.db`, `__MACOSX/`, dot folders) are left out everywhere;
symbolic links to folders are followed (a link to one of its own ancestors is an error); paths are
relative with `/`, so a folder and its zip list the same files.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import zipfile
from collections.abc import Callable, Iterator, Sequence

from data_pipeline.errors import DataError

_IGNORED_NAMES = {"thumbs.db", "desktop.ini", "__macosx"}


def _is_hidden(part: str) -> bool:
    """True for OS clutter that is never data (dot files, AppleDouble `._*`, Thumbs.db)."""
    return part.startswith(".") or part.lower() in _IGNORED_NAMES


def visible(paths: Sequence[str]) -> list[str]:
    """The paths none of whose components is hidden."""
    return [p for p in paths if not any(_is_hidden(part) for part in p.split("/"))]


def _list_folder(root: str) -> tuple[list[str], list[str]]:
    """Relative `/`-separated paths of all visible files, and of all visible folders, below `root`.

    Symbolic links to folders are followed. A link back up its own tree is skipped; a folder
    reached twice otherwise (two links to it, or a link to another class folder) is an error,
    since its tiles would be read twice, under two labels.
    """
    files, folders = [], []
    seen = {os.path.realpath(root): "."}
    for directory, subdirs, names in os.walk(root, followlinks=True):
        here = os.path.realpath(directory)
        relative = os.path.relpath(directory, root)
        kept = []
        for name in sorted(subdirs):
            real = os.path.realpath(os.path.join(directory, name))
            if _is_hidden(name) or _is_ancestor(real, here):
                continue
            path = name if relative == "." else os.path.join(relative, name)
            if real in seen:
                raise DataError(
                    f"'{os.path.join(root, path)}' and '{os.path.join(root, seen[real])}' are the same folder "
                    "(a symbolic link), so its tiles would be read twice; remove one of them"
                )
            seen[real] = path
            kept.append(name)
        subdirs[:] = kept
        for name in names:
            if not _is_hidden(name):
                path = name if relative == "." else os.path.join(relative, name)
                files.append(path.replace(os.sep, "/"))
        if relative != ".":
            folders.append(relative.replace(os.sep, "/"))
    return files, folders


def _is_ancestor(folder: str, of: str) -> bool:
    """True if real path `folder` is `of` or one of its parents (a link loop)."""
    return of == folder or of.startswith(folder.rstrip(os.sep) + os.sep)


def list_visible_files(root: str) -> list[str]:
    """Sorted `/`-separated paths, relative to folder `root`, of the files a source would consider."""
    return sorted(_list_folder(root)[0])


@contextlib.contextmanager
def open_zip_files(path: str) -> Iterator[list[tuple[str, Callable[[], bytes]]]]:
    """(`ZIP:member` name, read() -> its bytes) of every visible file in zip `path`, by name, until the context ends.

    read() raises OSError for a member that cannot be read (damaged, encrypted).
    """
    with open_tree(path) as (files, _folders, read, display):
        yield [(display(name), functools.partial(read, name)) for name in sorted(visible(files))]


def read_file(path: str) -> bytes:
    """The bytes of file `path`."""
    with open(path, "rb") as handle:
        return handle.read()


@contextlib.contextmanager
def open_tree(path: str) -> Iterator[tuple[list[str], Callable[[str], bytes], Callable[[str], str]]]:
    """Yield (file paths, folder paths, read(path) -> bytes, display(path) -> str) for a folder or zip."""
    if os.path.isdir(path):
        yield (
            *_list_folder(path),
            lambda rel: read_file(os.path.join(path, rel)),
            lambda rel: os.path.join(path, rel),
        )
        return
    if not os.path.exists(path):
        raise DataError(f"'{path}' does not exist; give a folder of class subfolders or a .zip of one")
    if not zipfile.is_zipfile(path):
        if path.lower().endswith(".zip"):
            raise DataError(f"'{path}' is not a readable zip (damaged or incompletely downloaded?); download it "
                            "again, or extract it and give the folder")
        raise DataError(f"'{path}' is a file but not a .zip; give a folder of class subfolders or a .zip of one")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise DataError(f"cannot open zip file '{path}': {error}") from error
    with archive:
        members = _zip_members(archive, path)

        # ZipFile.open and close count the open members without a lock of their own; the reads between
        # take the archive's own lock for each raw read, so members decompress in parallel.
        lock = threading.Lock()

        def read(name: str) -> bytes:
            try:
                with lock:
                    member = archive.open(members[name])
                try:
                    return member.read()
                finally:
                    with lock:
                        member.close()
            except Exception as error:  # damaged, encrypted or unsupported member: a bad file
                if members[name].flag_bits & 0x1:  # the zip format's "encrypted" bit
                    raise OSError("it is encrypted; extract the zip with its password, give the folder") from error
                raise OSError(f"cannot read it from the zip: {type(error).__name__}: {error}") from error

        files = [name for name, info in members.items() if not info.is_dir()]
        folders = [name for name, info in members.items() if info.is_dir()]
        yield files, folders, read, lambda rel: f"{path}:{rel}"


def _member_name(info: zipfile.ZipInfo) -> str:
    """A member's name as written: zipfile reads a name without the zip's UTF-8 flag as code page 437, though
    Info-ZIP's `zip` and most tools since write UTF-8 names without the flag; such a name is read as UTF-8 where its
    bytes are valid UTF-8 (a name of code page 437 rarely is)."""
    if info.flag_bits & 0x800:
        return info.filename
    try:
        return info.filename.encode("cp437").decode("utf-8")
    except UnicodeError:
        return info.filename


def _zip_members(archive: zipfile.ZipFile, path: str) -> dict[str, zipfile.ZipInfo]:
    """Members by `/`-separated name (Windows `\\` and a leading `./` normalised); DataError on duplicates."""
    members: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        name = _member_name(info).replace("\\", "/")
        while name.startswith(("./", "/")):
            name = name[2:] if name.startswith("./") else name[1:]
        is_dir = name.endswith("/")
        name = name.rstrip("/")
        if not name:
            continue
        if is_dir and not info.is_dir():
            info = zipfile.ZipInfo(info.filename + "/")  # a Windows-style folder entry
        if name in members and not (is_dir and members[name].is_dir()):
            raise DataError(
                f"zip '{path}' holds '{name}' twice, so one copy would hide the other; "
                "rebuild the zip with unique names"
            )
        members[name] = info
    return members
