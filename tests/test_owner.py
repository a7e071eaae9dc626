"""unlearnable.app.owner and its commands: protect a mixed photo collection, resume, verify, refuse."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from helpers import smooth_photo
from unlearnable.app.cli import main
from unlearnable.app.owner import protect_folder, verify_folder
from unlearnable.data.photos import decode_photo, encode_png16, read_photo
from unlearnable.errors import UserInputError

ROOT_FILES = {".DS_Store"}


def u8(a: np.ndarray) -> np.ndarray:
    return np.rint(a * 255).astype(np.uint8)


def make_collection(root: Path) -> dict[str, dict]:
    """A collection of every kind of file; returns what each published image must look like."""
    expect: dict[str, dict] = {}
    cats, dogs, deep = root / "cats", root / "dógs", root / "dógs" / "nested" / "deeper"
    for d in (cats, deep, root / "empty"):
        d.mkdir(parents=True)
    for o in range(1, 9):
        raw = u8(smooth_photo(36, 52, 3, o))
        exif = Image.Exif()
        exif[0x0112] = o
        exif[0x8825] = {1: "N"}  # a GPS IFD: private, stripped by default
        Image.fromarray(raw).save(cats / f"o{o}.jpg", quality=95, exif=exif)
        h, w = (52, 36) if o >= 5 else (36, 52)
        expect[f"cats/o{o}.jpg"] = {"size": (w, h), "channels": 3, "alpha": None, "depth": 8}
    rgba = u8(smooth_photo(40, 44, 4, 20))
    Image.fromarray(rgba, "RGBA").save(cats / "rgba.png")
    expect["cats/rgba.png"] = {"size": (44, 40), "channels": 3, "alpha": rgba[:, :, 3], "depth": 8}
    gray = u8(smooth_photo(48, 40, 1, 21))[:, :, 0]
    Image.fromarray(gray, "L").save(dogs / "gray.png")
    expect["dógs/gray.png"] = {"size": (40, 48), "channels": 1, "alpha": None, "depth": 8}
    la = np.stack([gray, 255 - gray], axis=2)
    Image.fromarray(la, "LA").save(dogs / "la.png")
    expect["dógs/la.png"] = {"size": (40, 48), "channels": 1, "alpha": 255 - gray, "depth": 8}
    pal = Image.fromarray(u8(smooth_photo(34, 46, 3, 22))).quantize(32)
    pal.save(dogs / "pal.png", transparency=0)
    expect["dógs/pal.png"] = {
        "size": (46, 34),
        "channels": 3,
        "alpha": np.where(np.asarray(pal) == 0, 0, 255),
        "depth": 8,
    }
    Image.fromarray(u8(smooth_photo(38, 50, 3, 23))).convert("CMYK").save(dogs / "cmyk.jpg", quality=95)
    expect["dógs/cmyk.jpg"] = {"size": (50, 38), "channels": 3, "alpha": None, "depth": 8}
    g16 = np.rint(smooth_photo(44, 36, 1, 24) * 65535).astype(np.uint16)
    Image.fromarray(g16[:, :, 0]).save(dogs / "g16.png")
    expect["dógs/g16.png"] = {"size": (36, 44), "channels": 1, "alpha": None, "depth": 16}
    c16 = np.rint(smooth_photo(40, 40, 3, 25) * 65535).astype(np.uint16)
    a16 = np.full((40, 40), 40000, np.uint16)
    (deep / "ñandú 16.png").write_bytes(encode_png16(c16, a16))
    expect["dógs/nested/deeper/ñandú 16.png"] = {"size": (40, 40), "channels": 3, "alpha": a16, "depth": 16}
    (cats / "._o1.jpg").write_bytes(b"\x00\x05\x16\x07 resource fork")
    (root / ".DS_Store").write_bytes(b"Bud1")
    (dogs / "Thumbs.db").write_bytes(b"thumbs")
    (dogs / "notes.txt").write_text("not a photo")
    (cats / "broken.jpg").write_bytes(b"not really a jpeg")
    os.symlink(cats / "o1.jpg", dogs / "link.jpg")  # the same file again, through a link
    return expect


@pytest.fixture
def collection(tmp_path: Path) -> tuple[Path, dict[str, dict]]:
    root = tmp_path / "photos"
    return root, make_collection(root)


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_protect_publishes_every_file_as_itself_and_verify_passes(collection, tmp_path) -> None:
    src, expect = collection
    out = tmp_path / "pub"
    result = protect_folder(src, out, progress=False)
    key_path = tmp_path / "pub.key.json"
    assert result.key == key_path and key_path.is_file()
    assert key_path.stat().st_mode & 0o077 == 0  # the private key is readable by its owner alone
    assert result.published == len(expect) and result.classes == 3
    assert result.empty_classes == ["empty"] and (out / "empty").is_dir()
    assert result.unreadable == ["cats/broken.jpg"]
    assert result.skipped == {"hidden": 3, "not_image": 1, "outside_classes": 0, "duplicates": 1}
    assert set(tree_bytes(out)) == set(expect)  # same names; the link and the junk not published
    key = json.loads(key_path.read_text())
    for rel, want in expect.items():
        photo = read_photo(out / rel)
        assert photo.size == want["size"], rel
        assert photo.pixels.shape[2] == want["channels"], rel
        assert photo.depth == want["depth"], rel
        if want["alpha"] is None:
            assert photo.alpha is None, rel
        else:
            assert np.array_equal(photo.alpha, want["alpha"]), rel
        image = Image.open(out / rel)
        assert image.getexif().get(0x0112) in (None, 1) and 0x8825 not in image.getexif(), rel
        source = read_photo(src / rel)  # orientation applied on both sides
        change = np.abs(photo.pixels - source.pixels).mean()
        assert 0.002 < change < 0.2, (rel, change)
    assert all(f["protected"] for f in key["files"])
    report = verify_folder(out, key_path, progress=False)
    assert report.all_ok and report.counts["ok"] == len(expect)


def test_interrupted_run_resumes_to_the_same_bytes(collection, tmp_path, monkeypatch) -> None:
    src, expect = collection
    reference = tmp_path / "ref"
    protect_folder(src, reference, progress=False, workers=1)
    out = tmp_path / "pub"
    seen = []

    def stop_after_four(record: dict) -> None:
        seen.append(record["source"])
        if len(seen) == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        protect_folder(src, out, progress=False, on_file=stop_after_four)
    assert not out.exists() and not (tmp_path / "pub.key.json").exists()
    partial = tmp_path / ".pub.partial"
    assert partial.is_dir()
    # one finished file corrupted on disk meanwhile: it must be redone, not trusted
    records = [json.loads(line) for line in (partial / ".unlearnable-protect.jsonl").read_text().splitlines()[1:]]
    finished = next(r for r in records if "published" in r)
    (partial / finished["published"]).write_bytes(b"garbage")
    result = protect_folder(src, out, progress=False)
    assert 2 <= result.resumed <= 4
    assert not partial.exists()
    assert tree_bytes(out) == tree_bytes(reference)
    assert (
        json.loads((tmp_path / "pub.key.json").read_text())["files"]
        == json.loads((tmp_path / "ref.key.json").read_text())["files"]
    )


def test_different_settings_do_not_reuse_a_partial(collection, tmp_path) -> None:
    src, _ = collection
    out = tmp_path / "pub"

    def stop(record: dict) -> None:
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        protect_folder(src, out, progress=False, strength="low", on_file=stop)
    result = protect_folder(src, out, progress=False, strength="high")
    assert result.resumed == 0
    reference = tmp_path / "ref"
    protect_folder(src, reference, progress=False, strength="high")
    assert tree_bytes(out) == tree_bytes(reference)


def test_seed_and_strength_change_the_bytes(collection, tmp_path) -> None:
    src, _ = collection
    a = tree_bytes(protect_folder(src, tmp_path / "a", progress=False, seed=1).out)
    b = tree_bytes(protect_folder(src, tmp_path / "b", progress=False, seed=2).out)
    c = tree_bytes(protect_folder(src, tmp_path / "c", progress=False, seed=1, strength="high").out)
    assert a.keys() == b.keys() == c.keys()
    assert all(a[k] != b[k] and a[k] != c[k] for k in a)


def test_verify_finds_modified_missing_extra_and_unprotected(collection, tmp_path) -> None:
    src, _ = collection
    out = tmp_path / "pub"
    protect_folder(src, out, progress=False)
    key = tmp_path / "pub.key.json"
    # recompressed (bytes change, protection holds)
    image = Image.open(out / "cats/o2.jpg")
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    (out / "cats/o2.jpg").write_bytes(buffer.getvalue())
    # the original put back in its place, re-encoded upright (not byte-equal to the source)
    shutil.copy(src / "dógs/gray.png", out / "dógs/gray.png")
    ImageOps.exif_transpose(Image.open(src / "cats/o3.jpg")).save(out / "cats/o3.jpg", quality=97)
    # an edit that removes the protection's low frequencies: a strong box blur of the published image
    edited = read_photo(out / "dógs/cmyk.jpg").pixels
    x = torch.from_numpy(edited).permute(2, 0, 1)[None]
    smeared = torch.nn.functional.avg_pool2d(x, 9, 1, 4, count_include_pad=False)[0].permute(1, 2, 0).numpy()
    Image.fromarray(np.rint(smeared * 255).astype(np.uint8)).save(out / "dógs/cmyk.jpg", quality=95)
    (out / "cats/o4.jpg").unlink()
    (out / "cats/new.jpg").write_bytes((out / "cats/o5.jpg").read_bytes())
    (out / "cats/.DS_Store").write_bytes(b"Bud1")  # OS litter is not an extra file
    report = verify_folder(out, key, progress=False)
    status = {c.path: c.status for c in report.checks}
    assert status["cats/o2.jpg"] == "modified"
    assert status["dógs/gray.png"] == "unprotected"
    assert status["cats/o3.jpg"] == "unprotected"
    assert status["dógs/cmyk.jpg"] == "unprotected"
    assert status["cats/o4.jpg"] == "missing"
    assert status["cats/new.jpg"] == "extra"
    assert report.counts == {"ok": 10, "modified": 1, "unprotected": 3, "missing": 1, "extra": 1}
    assert not report.all_ok
    # the unprotected collection itself, checked against the key: nothing passes
    unprotected = verify_folder(src, key, progress=False)
    assert unprotected.counts["ok"] == 0 and unprotected.counts["modified"] == 0


def test_refusals(collection, tmp_path) -> None:
    src, _ = collection
    with pytest.raises(UserInputError, match="inside PHOTOS"):
        protect_folder(src, src / "cats" / "out", progress=False)
    with pytest.raises(UserInputError, match="contains or lies inside"):
        protect_folder(src / "cats", src, progress=False)
    with pytest.raises(UserInputError, match="inside the published folder"):
        protect_folder(src, tmp_path / "pub", key=tmp_path / "pub" / "k.json", progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserInputError, match="not a folder"):
        protect_folder(src, tmp_path / "file", progress=False)
    with pytest.raises(UserInputError, match="--strength"):
        protect_folder(src, tmp_path / "pub", strength="max", progress=False)
    out = tmp_path / "pub"
    protect_folder(src, out, progress=False)
    before = tree_bytes(out)
    with pytest.raises(UserInputError, match="already exists"):
        protect_folder(src, out, progress=False)
    with pytest.raises(UserInputError, match="--key .* already exists"):
        protect_folder(src, tmp_path / "other", key=tmp_path / "pub.key.json", progress=False)
    protect_folder(src, out, progress=False, overwrite=True, seed=5)  # ours: replaced
    assert tree_bytes(out) != before
    (out / "cats" / "mine.txt").write_text("the user's own file")
    with pytest.raises(UserInputError, match="will not replace"):
        protect_folder(src, out, progress=False, overwrite=True)
    unrelated = tmp_path / "unrelated"
    unrelated.mkdir()
    (unrelated / "a.jpg").write_bytes(b"x")
    with pytest.raises(UserInputError, match="will not replace"):
        protect_folder(src, unrelated, progress=False, overwrite=True)
    assert (unrelated / "a.jpg").read_bytes() == b"x"
    with pytest.raises(UserInputError, match="pass the --key"):
        verify_folder(out, src / "dógs" / "notes.txt", progress=False)
    assert not any(p.name.endswith(".json") for p in out.rglob("*"))  # no key inside PUBLISHED, ever


def test_cli_protect_and_verify_exit_codes(collection, tmp_path, capsys) -> None:
    src, expect = collection
    out, key = tmp_path / "pub", tmp_path / "secret.json"
    code = main(
        [
            "protect",
            str(src),
            "--out",
            str(out),
            "--key",
            str(key),
            "--format",
            "png",
            "--metadata",
            "keep",
            "--strength",
            "low",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert f"published {len(expect)} photos" in printed and "secret.json" in printed
    assert all(p.suffix == ".png" for p in out.rglob("*") if p.is_file())
    assert Image.open(out / "cats/o6.png").getexif().get(0x0112) == 1  # kept EXIF, orientation reset
    assert main(["verify", str(out), "--key", str(key)]) == 0
    assert "verification passed" in capsys.readouterr().out
    (out / "cats/o1.png").unlink()
    assert main(["verify", str(out), "--key", str(key)]) == 1
    assert "1 missing" in capsys.readouterr().out
    assert main(["verify", str(out), "--key", str(tmp_path / "nokey.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert decode_photo((out / "dógs/g16.png").read_bytes()).depth == 16
