"""Safe outputs: a result appears complete under its final name or not at all, and nothing the
user owns is ever deleted or overwritten.

The rules every command follows for a directory output OUT (`check_output`, `atomic_directory`):

- OUT is built in a hidden sibling ``.OUT.<random>.partial`` and renamed to OUT when complete.
- An existing OUT is replaced only with ``overwrite=True``, and only when this tool wrote it: it
  holds the marker file ``.unlearnable`` listing every top-level entry the tool put there, and
  nothing else has been added since (a saved dataset written before the marker existed is
  recognised by its layout). Never a regular file, never a folder of other things.
- OUT is never one of the command's inputs, never inside one, and never contains one.
- A lock file ``.OUT.lock`` beside OUT is held while the output is built: a second command writing
  the same OUT at the same moment stops with one line instead of silently losing its result.
- Partial siblings left by a killed run (``.OUT.*.partial``, recognised by the marker file
  ``.unlearnable-partial`` inside) are removed by the next run that holds the lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from unlearnable.errors import UserInputError

MARKER = ".unlearnable"
"""The file in every directory this tool writes: JSON {"kind", "version", "entries"}."""

LEGACY_SAVED_ENTRIES = frozenset({"images.npy", "labels.npy", "meta.json", "test", "png", "kernels.png", "samples.png"})
"""What a saved dataset written before the marker existed may hold (`unlearnable poison` / `recover`)."""


def contains(parent: Path, child: Path) -> bool:
    """True when `child` is `parent` or lies inside it (both resolved)."""
    return child == parent or parent in child.parents


def written_by_tool(path: str | os.PathLike) -> bool:
    """True when the directory `path` is an output of this tool that it may replace.

    It must hold the marker, and every top-level entry must be one the marker lists (a file the
    user added since makes it theirs too). A saved dataset from before the marker existed counts
    when it holds images.npy, labels.npy and meta.json and nothing but the names such a dataset has.
    """
    p = Path(path)
    if not p.is_dir() or p.is_symlink():
        return False
    entries = {e.name for e in p.iterdir()}
    marker = p / MARKER
    if marker.is_file():
        try:
            listed = set(json.loads(marker.read_text())["entries"])
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return entries - {MARKER} <= listed
    return {"images.npy", "labels.npy", "meta.json"} <= entries and entries <= LEGACY_SAVED_ENTRIES


def check_output(
    out: str | os.PathLike,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike] = (),
    recognise: Callable[[Path], bool] | None = None,
    flag: str = "--out",
) -> Path:
    """Refuse, in one line, an output directory that would lose the user's data; return it as a Path.

    Args:
        out: the output directory.
        overwrite: whether an existing output of this tool may be replaced.
        inputs: files or directories the command reads; `out` may not be one of them, lie inside
            one (unless it is a strict sub-path of a directory the tool itself wrote), or contain one.
        recognise: another test for "this tool wrote it" (default `written_by_tool`).
        flag: the option's name in messages.
    """
    out = Path(out)
    resolved = out.resolve()
    for given in inputs:
        if not Path(given).exists():  # a dataset name such as "cifar10", not a path
            continue
        source = Path(given).resolve()
        if contains(resolved, source):
            what = "is" if resolved == source else "contains"
            raise UserInputError(f"{flag} {out} {what} this command's input {given}; write the output elsewhere")
        if contains(source, resolved) and source.is_dir():
            raise UserInputError(f"{flag} {out} lies inside this command's input {given}; write the output elsewhere")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UserInputError(f"{flag} {out} exists and is not a directory; choose a new path")
    if out.exists():
        if not overwrite:
            raise UserInputError(f"{flag} {out} already exists; choose another path or pass --overwrite")
        if not (recognise or written_by_tool)(out):
            raise UserInputError(
                f"{flag} {out} holds files unlearnable did not write, so --overwrite will not "
                f"replace it; choose a new path"
            )
    return out


@contextlib.contextmanager
def output_lock(out: Path, flag: str = "--out") -> Iterator[None]:
    """Hold an exclusive lock on ``.OUT.lock`` beside `out`; another holder makes this a UserInputError."""
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.parent / f".{out.name}.lock"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserInputError(
                f"another unlearnable command is writing {flag} {out} right now; wait for it "
                f"to finish or choose another path"
            ) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a lock file that its previous holder unlinked while we waited to open it
            break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


PARTIAL_MARKER = ".unlearnable-partial"
"""The empty file in every partial output while it is built (removed before the rename), so that a
stale partial is recognised as this tool's before it is removed."""


def start_partial(tmp: Path) -> Path:
    """Mark the new partial directory `tmp` as this tool's (see `remove_stale_partials`)."""
    (tmp / PARTIAL_MARKER).touch()
    return tmp


def remove_stale_partials(out: Path) -> None:
    """Remove the ``.OUT.*.partial`` siblings a killed run of this tool left (call only while holding
    the lock); a directory of that name without the partial marker is not ours and stays."""
    for stale in out.parent.glob(f".{glob_escape(out.name)}.*.partial"):
        if (stale / PARTIAL_MARKER).is_file():
            shutil.rmtree(stale, ignore_errors=True)


def glob_escape(name: str) -> str:
    """`name` with glob's special characters taken literally."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def write_marker(directory: Path, kind: str) -> None:
    """Write the marker listing `directory`'s current top-level entries (call when it is complete)."""
    from unlearnable import __version__

    entries = sorted(e.name for e in directory.iterdir() if e.name != MARKER)
    write_json(directory / MARKER, {"kind": kind, "version": __version__, "entries": entries})


def rename_no_replace(src: Path, dst: Path) -> None:
    """Rename `src` to `dst`, failing if `dst` exists (even as an empty directory)."""
    libc = _libc()
    if libc is not None:
        RENAME_NOREPLACE = 1
        if libc.renameat2(-100, os.fsencode(src), -100, os.fsencode(dst), RENAME_NOREPLACE) == 0:
            return
        err = _errno()
        if err not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(err, os.strerror(err), str(dst))
    if dst.exists() or dst.is_symlink():
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)


def _libc() -> Any:
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.renameat2  # noqa: B018 - glibc ≥ 2.28
        return libc
    except (OSError, AttributeError):
        return None


def _errno() -> int:
    import ctypes

    return ctypes.get_errno()


def _publish(tmp: Path, out: Path, overwrite: bool, recognise: Callable[[Path], bool] | None, flag: str) -> None:
    """Move the finished `tmp` to `out`; the existence check holds at the moment of the rename."""
    if (out.exists() or out.is_symlink()) and overwrite:
        check_output(out, overwrite, recognise=recognise, flag=flag)  # what is there now must be ours
        trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, trash / out.name)
        try:
            rename_no_replace(tmp, out)
        except OSError:
            os.replace(trash / out.name, out)
            shutil.rmtree(trash, ignore_errors=True)
            raise
        shutil.rmtree(trash, ignore_errors=True)
        return
    try:
        rename_no_replace(tmp, out)  # fails if `out` appeared meanwhile, even as an empty directory
    except FileExistsError:
        raise UserInputError(
            f"{flag} {out} was created by another command while this one ran; this result "
            f"was not kept, run again with another path"
        ) from None


@contextlib.contextmanager
def atomic_directory(
    out: str | os.PathLike,
    overwrite: bool = False,
    *,
    inputs: Iterable[str | os.PathLike] = (),
    kind: str | None = "output",
    recognise: Callable[[Path], bool] | None = None,
    flag: str = "--out",
) -> Iterator[Path]:
    """Yield a temporary sibling directory that becomes `out` when the block succeeds.

    The rules are the module's: `check_output` first, the lock for the whole block, stale partials
    removed, the marker (of `kind`; None writes none) written, and a rename that never replaces a
    directory another command created meanwhile. On any exception (Ctrl-C included) the temporary
    directory is removed and `out` is untouched.
    """
    out = check_output(out, overwrite, inputs, recognise, flag)
    with output_lock(out, flag):
        check_output(out, overwrite, inputs, recognise, flag)  # again, now that no other writer runs
        remove_stale_partials(out)
        tmp = start_partial(Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the result should not be
        try:
            yield tmp
            (tmp / PARTIAL_MARKER).unlink()
            if kind is not None:
                write_marker(tmp, kind)
            _publish(tmp, out, overwrite, recognise, flag)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


@contextlib.contextmanager
def shared_atomic_directory(
    out: str | os.PathLike,
    world: Any,
    overwrite: bool = False,
    *,
    inputs: Iterable[str | os.PathLike] = (),
    kind: str | None = "output",
) -> Iterator[Path]:
    """`atomic_directory` for several processes (`unlearnable.distributed.World`) writing one result.

    The temporary sibling has a fixed name, ``.<name>.shared.partial``, so that every process finds
    it: rank 0 checks the output, takes the lock and (re)creates it, every process writes its share
    into it, and rank 0 renames it to `out` once all have finished the block. With one process this
    is `atomic_directory`.
    """
    from unlearnable import distributed

    if not world.distributed:
        with atomic_directory(out, overwrite, inputs=inputs, kind=kind) as tmp:
            yield tmp
        return
    out = Path(out)
    problem = None
    lock = contextlib.ExitStack()
    if world.main:  # rank 0 checks and locks; every rank learns whether it may go on
        try:
            check_output(out, overwrite, inputs)
            lock.enter_context(output_lock(out))
        except UserInputError as e:
            problem = str(e)
    if not distributed.all_agree(world, problem is None):
        lock.close()
        raise UserInputError(problem or f"--out {out} cannot be written; see the first process's message")
    tmp = out.parent / f".{out.name}.shared.partial"
    with lock:
        if world.main:
            remove_stale_partials(out)  # the fixed name matches the pattern: an earlier run's is gone now
            tmp.mkdir(parents=True)
            start_partial(tmp)
        distributed.barrier(world)
        try:
            yield tmp
            distributed.barrier(world)
            if world.main:
                (tmp / PARTIAL_MARKER).unlink()
                if kind is not None:
                    write_marker(tmp, kind)
                _publish(tmp, out, overwrite, None, "--out")
        except BaseException:
            if world.main:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
    distributed.barrier(world)


def check_file_output(
    path: str | os.PathLike,
    inputs: Iterable[str | os.PathLike] = (),
    suffix: str = ".png",
    flag: str = "--out",
    is_own: Callable[[Path], bool] | None = None,
) -> Path:
    """Refuse a single-file output that would replace an input or a file this tool did not write.

    An existing file is replaced only when `is_own` says this tool wrote it (default `is_own_png`:
    a PNG whose "Software" text chunk says unlearnable); the path must end in `suffix` and may not
    be an input or lie inside an input directory (a saved dataset's own images.npy, say).
    """
    path = Path(path)
    if path.suffix.lower() != suffix:
        raise UserInputError(f"{flag} {path} must end in {suffix}")
    resolved = path.resolve()
    for given in inputs:
        if not Path(given).exists():
            continue
        source = Path(given).resolve()
        if resolved == source or (source.is_dir() and contains(source, resolved)):
            where = "is" if resolved == source else "lies inside"
            raise UserInputError(f"{flag} {path} {where} this command's input {given}; write the output elsewhere")
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise UserInputError(f"{flag} {path} exists and is not a regular file; choose a new path")
    if path.exists() and not (is_own or is_own_png)(path):
        raise UserInputError(f"{flag} {path} exists and was not written by unlearnable; choose a new path")
    return path


PNG_SOFTWARE = "unlearnable"
"""The value of the "Software" text chunk in every PNG picture this tool writes."""


def is_own_png(path: Path) -> bool:
    """True when `path` is a PNG whose "Software" text chunk says this tool wrote it."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.format == "PNG" and image.info.get("Software") == PNG_SOFTWARE
    except (OSError, ValueError):
        return False


def is_own_json(path: Path, key: str) -> bool:
    """True when `path` holds a JSON object with `key`, as the JSON files this tool writes do."""
    try:
        return key in json.loads(path.read_text())
    except (OSError, ValueError, TypeError):
        return False


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int | None = None) -> None:
    """Write `data` to `path` through a temporary file and a rename; `mode` None: 0o666 less the umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask() if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj: dict[str, Any]) -> None:
    """Write a dict as JSON with one top-level key per line (long lists stay on their line), atomically."""
    lines = [f" {json.dumps(k)}: {json.dumps(v)}" for k, v in obj.items()]
    atomic_write_bytes(path, ("{\n" + ",\n".join(lines) + "\n}\n").encode())


def free_space_check(directory: str | os.PathLike, needed: int, what: str) -> None:
    """Refuse, in one line, to write `needed` bytes into `directory` (or its nearest existing parent)
    when the file system has less free space than that plus a 1 GiB margin."""
    p = Path(directory).resolve()
    while not p.exists():
        p = p.parent
    free = shutil.disk_usage(p).free
    margin = 1 << 30
    if needed + margin > free:
        raise UserInputError(
            f"{what} needs {needed / 2**30:.1f} GiB but {p} has {free / 2**30:.1f} GiB free "
            f"(keeping 1 GiB spare); free some space or choose a smaller size or another path"
        )
