"""Safe outputs (unlearnable.io): what --overwrite may replace, locks against concurrent writers,
stale partials, and the existence check at the moment of the rename."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

import unlearnable.app.poison
from unlearnable.app.cli import main
from unlearnable.errors import UserInputError
from unlearnable.io import MARKER, PARTIAL_MARKER, atomic_directory, check_output, rename_no_replace, written_by_tool


def test_marker_lists_what_was_written(tmp_path):
    with atomic_directory(tmp_path / "out", kind="test") as tmp:
        (tmp / "a.npy").write_bytes(b"1")
        (tmp / "sub").mkdir()
    marker = json.loads((tmp_path / "out" / MARKER).read_text())
    assert marker["kind"] == "test" and marker["entries"] == ["a.npy", "sub"]
    assert written_by_tool(tmp_path / "out")
    (tmp_path / "out" / "mine.txt").write_text("the user's")
    assert not written_by_tool(tmp_path / "out")  # a file the user added makes it theirs too


def test_overwrite_replaces_only_own_outputs(tmp_path):
    with atomic_directory(tmp_path / "out") as tmp:
        (tmp / "old").write_text("old")
    with atomic_directory(tmp_path / "out", overwrite=True) as tmp:
        (tmp / "new").write_text("new")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [MARKER, "new"]
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.tex").write_text("years of work")
    with pytest.raises(UserInputError, match="did not write"):
        check_output(tmp_path / "docs", overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserInputError, match="not a directory"):
        check_output(tmp_path / "file", overwrite=True)
    assert (tmp_path / "docs" / "thesis.tex").read_text() == "years of work"


def test_legacy_saved_dataset_is_recognised(tmp_path):
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    for name in ("images.npy", "labels.npy", "meta.json"):
        (legacy / name).write_bytes(b"")
    (legacy / "test").mkdir()
    assert written_by_tool(legacy)
    (legacy / "notes.txt").write_text("")
    assert not written_by_tool(legacy)


def test_output_never_an_input(tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    for out, needle in ((src, "is this command's input"), (tmp_path, "contains"), (src / "sub", "inside")):
        with pytest.raises(UserInputError, match=needle):
            check_output(out, overwrite=True, inputs=[src])
    check_output(tmp_path / "elsewhere", inputs=[src, "cifar10"])  # a dataset name is not a path


def test_failed_block_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_directory(tmp_path / "out") as tmp:
            (tmp / "half").write_text("x")
            raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def test_stale_partials_of_the_same_output_are_removed(tiny_folder, tmp_path):
    stale = tmp_path / ".p.k2j4.partial"  # what a killed run leaves: the partial marker inside
    stale.mkdir()
    (stale / PARTIAL_MARKER).touch()
    (stale / "images.npy").write_bytes(b"0" * 1000)
    other = tmp_path / ".q.k2j4.partial"  # another output's: not ours to remove
    other.mkdir()
    (other / PARTIAL_MARKER).touch()
    foreign = tmp_path / ".p.mine.partial"  # the same pattern, but not written by this tool
    foreign.mkdir()
    assert main(["poison", "--data", str(tiny_folder), "--out", str(tmp_path / "p")]) == 0
    assert not stale.exists() and other.exists() and foreign.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".p.mine.partial", ".q.k2j4.partial", "p", "tiny"]
    assert not (tmp_path / "p" / PARTIAL_MARKER).exists()


def test_concurrent_writer_fails_cleanly(tiny_folder, tmp_path, monkeypatch, capsys):
    """While one poison run writes OUT, a second one with the same OUT stops with one line, and the
    first one's result is the one that lands."""
    inside, release = threading.Event(), threading.Event()
    real = unlearnable.app.poison.write_meta_and_test

    def slow(directory, train, test=None):
        real(directory, train, test)
        if threading.current_thread() is not threading.main_thread():
            inside.set()
            release.wait(60)

    monkeypatch.setattr(unlearnable.app.poison, "write_meta_and_test", slow)
    out = tmp_path / "p"
    codes = []
    first = threading.Thread(
        target=lambda: codes.append(main(["poison", "--data", str(tiny_folder), "--seed", "0", "--out", str(out)]))
    )
    first.start()
    assert inside.wait(60)
    assert main(["poison", "--data", str(tiny_folder), "--seed", "1", "--out", str(out)]) == 2
    assert "another unlearnable command is writing" in capsys.readouterr().err
    release.set()
    first.join(60)
    assert codes == [0]
    assert json.loads((out / "meta.json").read_text())["seed"] == 0
    assert not list(tmp_path.glob(".p.*"))


def test_output_created_meanwhile_is_not_replaced(tmp_path):
    """Something that appears at OUT while the result is built (by a program that takes no lock) is
    never replaced: the rename refuses, and this result is dropped with one line."""
    out = tmp_path / "out"
    with pytest.raises(UserInputError, match="created by another command"):
        with atomic_directory(out) as tmp:
            (tmp / "mine").write_text("x")
            out.mkdir()  # empty: a plain rename would silently replace it
    assert out.is_dir() and list(out.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    (tmp_path / "a").mkdir()
    with pytest.raises(FileExistsError):
        rename_no_replace(tmp_path / "a", out)


def test_poison_overwrite_replaces_its_own_output(tiny_folder, tmp_path):
    out = tmp_path / "p"
    assert main(["poison", "--data", str(tiny_folder), "--seed", "0", "--out", str(out)]) == 0
    assert main(["poison", "--data", str(tiny_folder), "--seed", "1", "--out", str(out), "--overwrite"]) == 0
    assert json.loads((out / "meta.json").read_text())["seed"] == 1
    assert np.load(out / "images.npy").shape[0] == 24
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p", "tiny"]
