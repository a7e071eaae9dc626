"""The ImageNet-100 store: layouts, class subsets, pixels, resuming, errors, the loader, the CLI and torchrun."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

import unlearnable.data.imagenet as imagenet
from helpers import CIRCLE, NAMES, TRAIN_SIZES, WNIDS, smooth_image, write_imagenet
from unlearnable.app.cli import main
from unlearnable.data import load_dataset, load_saved
from unlearnable.data.cache import cache_root
from unlearnable.data.imagenet import build_store, default_store, resolve_subset
from unlearnable.errors import UserInputError


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "imagenet"
    write_imagenet(root)
    return root


def reference(path: Path, size: int, resize: str) -> np.ndarray:
    """An independent decode: PIL to RGB, then PIL's bilinear resize or torchvision's Resize + CenterCrop."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    if resize == "stretch":
        return np.asarray(rgb.resize((size, size), Image.Resampling.BILINEAR))
    crop = transforms.Compose(
        [transforms.Resize(size, transforms.InterpolationMode.BILINEAR), transforms.CenterCrop(size)]
    )
    return np.asarray(crop(rgb))


def build(root: Path, out: Path, **kwargs) -> Path:
    options = {"subset": "all", "image_size": 24, "chunk_size": 5, "progress": False, **kwargs}
    return build_store(root, out, **options)


def tree_bytes(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def count_decodes(monkeypatch: pytest.MonkeyPatch, fail_after: int | None = None) -> list[Path]:
    """Record every image decoded; with `fail_after`, the decode after that many raises KeyboardInterrupt."""
    real, seen = imagenet.decode_resized, []

    def counting(path: Path, size: int, resize: str) -> np.ndarray:
        if fail_after is not None and len(seen) >= fail_after:
            raise KeyboardInterrupt
        seen.append(path)
        return real(path, size, resize)

    monkeypatch.setattr(imagenet, "decode_resized", counting)
    return seen


@pytest.mark.parametrize("resize", ["stretch", "crop"])
def test_store_holds_every_image_decoded_as_pil_does(tmp_path: Path, resize: str) -> None:
    files = write_imagenet(tmp_path / "imagenet")
    out = build(tmp_path / "imagenet", tmp_path / "store", resize=resize)
    assert out == tmp_path / "store" and not (tmp_path / "store.partial").exists()
    assert sorted(p.name for p in out.iterdir()) == ["images.npy", "labels.npy", "meta.json", "plan.json", "test"]
    train, test = load_saved(out, "train"), load_saved(out, "test")
    assert train.classes == WNIDS and train.shape == (3, 24, 24) and len(train) == 24 and len(test) == 8
    assert train.labels.tolist() == [c for c in range(4) for _ in TRAIN_SIZES]
    assert test.labels.tolist() == [label for _, label in files["val"]] == [0, 0, 1, 1, 2, 2, 3, 3]
    stored = np.load(out / "images.npy", mmap_mode="r")
    assert isinstance(stored, np.memmap) and stored.dtype == np.uint8 and stored.shape == (24, 24, 24, 3)
    assert torch.equal(train.images, torch.from_numpy(np.array(stored)).permute(0, 3, 1, 2))
    for i, path in enumerate(files["train"]):
        assert np.array_equal(stored[i], reference(path, 24, resize)), path.name
    for i, (path, _) in enumerate(files["val"]):
        assert np.array_equal(test.numpy_nhwc()[i], reference(path, 24, resize)), path.name
    meta = train.meta
    assert meta["source"] == {
        "spec": "imagenet100",
        "kind": "imagenet",
        "split": "train",
        "path": str((tmp_path / "imagenet").resolve()),
    }
    assert meta["imagenet"] == {
        "subset": "all",
        "wnids": WNIDS,
        "class_names": NAMES,
        "image_size": 24,
        "resize": resize,
        "decoder": "pil",
    }
    assert meta["num_images"] == 24 and meta["image_shape"] == [3, 24, 24] and meta["has_test_split"] is True


def test_crop_keeps_the_aspect_ratio_and_stretch_does_not(tree: Path, tmp_path: Path) -> None:
    stretch = load_saved(build(tree, tmp_path / "stretch")).numpy_nhwc()
    crop = load_saved(build(tree, tmp_path / "crop", resize="crop")).numpy_nhwc()
    index = WNIDS.index(CIRCLE[0]) * len(TRAIN_SIZES) + CIRCLE[1]

    def extent(image: np.ndarray) -> tuple[int, int]:
        bright = image[..., 0] > 127
        return int(bright.any(axis=1).sum()), int(bright.any(axis=0).sum())  # rows, columns

    rows, cols = extent(crop[index])
    assert abs(rows - cols) <= 1 and rows >= 15  # still a disk
    rows, cols = extent(stretch[index])
    assert cols <= 0.6 * rows  # squeezed sideways into an ellipse
    square = 3  # the 31×31 image: both modes resize it to 24×24 the same way
    differs = [not np.array_equal(stretch[i], crop[i]) for i in range(len(TRAIN_SIZES))]
    assert differs == [i != square for i in range(len(TRAIN_SIZES))]


@pytest.mark.parametrize("val", ["folders", "text", "kaggle"])
def test_val_layouts_give_the_same_store(tmp_path: Path, val: str) -> None:
    write_imagenet(tmp_path / "csv")
    files = write_imagenet(tmp_path / val, val=val)
    a = build(tmp_path / "csv", tmp_path / "a")
    b = build(tmp_path / val, tmp_path / "b", val_labels=files["val_labels"])
    for name in ("images.npy", "labels.npy", "test/images.npy", "test/labels.npy"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_class_subsets_pick_classes_and_relabel(tree: Path, tmp_path: Path) -> None:
    full = load_saved(build(tree, tmp_path / "all"))
    first3 = load_saved(build(tree, tmp_path / "first3", subset="first3"))
    assert first3.classes == WNIDS[:3] and len(first3) == 18
    assert torch.equal(first3.images, full.images[:18]) and torch.equal(first3.labels, full.labels[:18])
    assert load_saved(tmp_path / "first3", "test").labels.tolist() == [0, 0, 1, 1, 2, 2]
    chosen = tmp_path / "classes.txt"
    chosen.write_text("# two of them, in any order\nn00000004\n\n  n00000002  # the goldfish\n")
    picked = load_saved(build(tree, tmp_path / "picked", subset=str(chosen)))
    assert picked.classes == ["n00000002", "n00000004"] and picked.labels.tolist() == [0] * 6 + [1] * 6
    assert torch.equal(picked.images, torch.cat([full.images[6:12], full.images[18:24]]))
    assert picked.meta["imagenet"]["subset"] == str(chosen.resolve())
    assert picked.meta["imagenet"]["class_names"] == [NAMES[1], NAMES[3]]
    assert load_saved(tmp_path / "picked", "test").labels.tolist() == [0, 0, 1, 1]


def test_cmc100_is_the_published_list() -> None:
    wnids = resources.files("unlearnable.data").joinpath("imagenet100_cmc.txt").read_text().split()
    assert len(wnids) == 100 == len(set(wnids))
    assert all(re.fullmatch(r"n[0-9]{8}", w) for w in wnids)
    assert wnids[:3] == ["n02869837", "n01749939", "n02488291"] and wnids[-1] == "n02090622"
    available = sorted(wnids + ["n01440764", "n99999999"])
    assert resolve_subset("cmc100", available, Path("train")) == sorted(wnids)
    with pytest.raises(UserInputError, match="n02869837 of .* has no folder in train"):
        resolve_subset("cmc100", sorted(set(available) - {"n02869837"}), Path("train"))


@pytest.mark.parametrize(
    "subset, message",
    [
        ("first5", "first5 needs 5 classes but .* has 4; use first4 or all"),
        ("first0", "first0 needs 0 classes"),
        ("cmc100", "n0.* of .*imagenet100_cmc.txt has no folder"),
        ("tiny10", "unknown class subset 'tiny10'"),
        ("no/such.txt", "class list no/such.txt: no such file"),
    ],
)
def test_bad_subsets_are_refused(tree: Path, tmp_path: Path, subset: str, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        build(tree, tmp_path / "out", subset=subset)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_layout_errors_are_one_line_each(tmp_path: Path) -> None:
    root = tmp_path / "imagenet"
    root.mkdir()
    cases = []

    def refused(message: str, **kwargs) -> None:
        with pytest.raises(UserInputError, match=message) as error:
            build(root, tmp_path / "out", **kwargs)
        cases.append(str(error.value))

    refused("has no train/ folder")
    write_imagenet(root, val="folders")
    val = root / "val"
    val.rename(root / "v")
    refused("has train/ but no val/")
    (root / "v").rename(val)
    refused("--val-labels was given but .* wnid folders", val_labels=root / "LOC_synset_mapping.txt")
    (val / WNIDS[0] / "stray").mkdir()
    (val / "n09999999").mkdir()
    refused(r"val folder .*n09999999 has no matching")
    (val / "n09999999").rmdir()
    Image.new("RGB", (8, 8)).save(val / "ILSVRC2012_val_00000099.JPEG")
    refused("holds images directly but there is no LOC_val_solution.csv")
    labels = tmp_path / "labels.txt"
    labels.write_text("ILSVRC2012_val_00000099.JPEG n00000001\n")
    build(root, tmp_path / "ok", val_labels=labels)  # the wnid folders inside val/ are ignored then
    labels.write_text("ILSVRC2012_val_00000098.JPEG n00000001\n")
    refused(r"val image .*ILSVRC2012_val_00000099.JPEG has no label in .*labels.txt", val_labels=labels)
    labels.write_text("ILSVRC2012_val_00000099 n07777777\n")
    refused("labels ILSVRC2012_val_00000099.JPEG with n07777777, which has no folder", val_labels=labels)
    labels.write_text("ILSVRC2012_val_00000099.JPEG\n")
    refused("line 1 of .* expected '<file name> <wnid>'", val_labels=labels)
    refused("no such file; check --val-labels", val_labels=tmp_path / "missing.txt")
    (root / "LOC_val_solution.csv").write_text("ImageId,Label\nILSVRC2012_val_00000099,n00000001\n")
    refused("expected the Kaggle header")
    assert all("\n" not in message for message in cases)
    with pytest.raises(UserInputError, match="unknown resize mode 'squash'"):
        build(root, tmp_path / "out", resize="squash")


def test_builds_are_byte_identical(tree: Path, tmp_path: Path) -> None:
    a, b = build(tree, tmp_path / "a", workers=2), build(tree, tmp_path / "b", workers=1, chunk_size=3)
    assert tree_bytes(a).keys() == tree_bytes(b).keys()
    for name, data in tree_bytes(a).items():
        if name != "plan.json":  # the plan records the chunk size
            assert data == tree_bytes(b)[name], name


def test_interrupted_build_resumes_without_decoding_done_chunks(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = write_imagenet(tmp_path / "copy")  # same images at another path, for the uninterrupted build
    whole = build(tmp_path / "copy", tmp_path / "whole", workers=1)
    count_decodes(monkeypatch, fail_after=12)  # one thread: chunks 0 and 1 finish, chunk 2 fails
    with pytest.raises(KeyboardInterrupt):
        build(tree, tmp_path / "store", workers=1)
    partial = tmp_path / "store.partial"
    assert not (tmp_path / "store").exists()
    assert sorted(p.name for p in (partial / "done").iterdir()) == ["train-0", "train-1"]
    monkeypatch.undo()
    seen = count_decodes(monkeypatch)
    out = build(tree, tmp_path / "store", workers=1)
    assert len(seen) == 24 + 8 - 10
    assert {p.name for p in seen}.isdisjoint(p.name for p in files["train"][:10])
    assert not partial.exists()
    for name in ("images.npy", "labels.npy", "test/images.npy", "test/labels.npy"):
        assert (out / name).read_bytes() == (whole / name).read_bytes(), name
    seen.clear()
    assert build(tree, tmp_path / "store", workers=1) == out and seen == []  # built: returned as is


def test_other_settings_are_refused(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    count_decodes(monkeypatch, fail_after=3)
    with pytest.raises(KeyboardInterrupt):
        build(tree, tmp_path / "store", workers=1)
    monkeypatch.undo()
    with pytest.raises(
        UserInputError,
        match=r"store.partial was started with other settings \(image_size differ\); "
        "delete it, or run with the settings it was started with",
    ):
        build(tree, tmp_path / "store", image_size=16)
    Image.new("RGB", (9, 9)).save(tree / "train" / WNIDS[0] / "new.JPEG")
    with pytest.raises(UserInputError, match="store.partial was started from other files .*; delete it to start again"):
        build(tree, tmp_path / "store", workers=1)
    (tree / "train" / WNIDS[0] / "new.JPEG").unlink()
    build(tree, tmp_path / "store")
    with pytest.raises(
        UserInputError, match="store exists but was not built with these settings .*; choose another --out or delete it"
    ):
        build(tree, tmp_path / "store", resize="crop")
    Image.new("RGB", (9, 9)).save(tree / "train" / WNIDS[0] / "extra.JPEG")
    with pytest.raises(UserInputError, match="store exists but was not built"):
        build(tree, tmp_path / "store")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_image_is_named_and_nothing_final_appears(tree: Path, tmp_path: Path, damage: str) -> None:
    bad = tree / "train" / WNIDS[1] / f"{WNIDS[1]}_4.JPEG"
    data = bad.read_bytes()
    bad.write_bytes(b"not a jpeg at all" if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(
        UserInputError, match=rf"cannot decode .*{bad.name} \(.*\); replace it with a good copy"
    ) as error:
        build(tree, tmp_path / "store")
    assert "\n" not in str(error.value) and not (tmp_path / "store").exists()


def test_replacing_a_corrupt_image_redoes_only_its_chunk(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = write_imagenet(tmp_path / "copy")  # the same images elsewhere, for an uninterrupted build
    whole = build(tmp_path / "copy", tmp_path / "whole", workers=1)
    bad = files["train"][12]  # chunk 2 of the train split (chunks of 5)
    bad = tree / bad.relative_to(tmp_path / "copy")
    good = bad.read_bytes()
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(UserInputError, match=bad.name):
        build(tree, tmp_path / "store", workers=1)
    bad.write_bytes(good)
    changed = tree / files["train"][1].relative_to(tmp_path / "copy")  # in chunk 0, which was done
    changed.write_bytes(changed.read_bytes())  # the same bytes, a new modification time
    seen = count_decodes(monkeypatch)
    out = build(tree, tmp_path / "store", workers=1)
    names = {p.name for p in seen}
    assert bad in seen and {p.name for p in files["train"][:5]} <= names  # chunks 0 and 2 again
    assert names.isdisjoint(p.name for p in files["train"][5:10])  # chunk 1 was done and unchanged
    assert len(seen) == 24 + 8 - 5
    for name in ("images.npy", "labels.npy", "test/images.npy", "test/labels.npy"):
        assert (out / name).read_bytes() == (whole / name).read_bytes(), name


def write_hundred_classes(root: Path) -> None:
    """100 classes of one tiny train image and one tiny val image each, val flat with the Kaggle csv."""
    rng = np.random.default_rng(3)
    rows = []
    for c in range(100):
        wnid = f"n{c + 1:08d}"
        (root / "train" / wnid).mkdir(parents=True)
        smooth_image(rng, 12, 9).save(root / "train" / wnid / "a.JPEG")
        (root / "val").mkdir(exist_ok=True)
        smooth_image(rng, 9, 12).save(root / "val" / f"v{c:03d}.JPEG")
        rows.append(f"v{c:03d},{wnid} 0 0 5 5")
    (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(rows) + "\n")


def test_load_dataset_builds_the_default_store_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "imagenet"
    write_hundred_classes(root)
    train = load_dataset("imagenet100", "train", data_root=str(root))
    store = default_store(root)
    assert store.parent == cache_root() and store.name.startswith("imagenet100-first100-224-stretch-")
    assert len(train) == 100 and train.shape == (3, 224, 224) and train.labels.tolist() == list(range(100))
    assert train.meta["imagenet"]["subset"] == "first100" and train.meta["source"]["kind"] == "imagenet"
    seen = count_decodes(monkeypatch)
    test = load_dataset("imagenet100", "test", data_root=str(root))
    assert len(test) == 100 and seen == []  # reused
    assert torch.equal(load_dataset("imagenet100", "train", data_root=str(store)).images, train.images)
    Image.new("RGB", (9, 9)).save(root / "train" / "n00000001" / "b.JPEG")
    assert len(load_dataset("imagenet100", "train", data_root=str(root))) == 101 and len(seen) == 201  # rebuilt
    with pytest.raises(UserInputError, match="^imagenet100 needs --data-root DIR pointing at an ImageNet folder"):
        load_dataset("imagenet100", "train")
    with pytest.raises(UserInputError, match="has no train/ folder"):
        load_dataset("imagenet100", "train", data_root=str(tmp_path))
    write_imagenet(tmp_path / "four")
    with pytest.raises(UserInputError, match="has 4 train classes and ImageNet-100 takes the first 100"):
        load_dataset("imagenet100", "train", data_root=str(tmp_path / "four"))


def test_cli_prepare(tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "store"
    argv = [
        "prepare",
        "imagenet100",
        "--data-root",
        str(tree),
        "--out",
        str(out),
        "--classes",
        "first3",
        "--image-size",
        "16",
        "--resize",
        "crop",
        "--chunk-size",
        "4",
        "--workers",
        "1",
    ]
    assert main(argv) == 0
    line = capsys.readouterr().out.strip()
    assert len(line.splitlines()) == 1
    assert re.fullmatch(
        rf"imagenet100: 18 train and 6 val images of 3 classes at 16×16 \(crop\) -> {out}: "
        r"[0-9.]+ s, [0-9]+ img/s, 1 process\(es\)",
        line,
    ), line
    assert load_saved(out).meta["imagenet"]["resize"] == "crop"
    assert main(argv) == 0 and capsys.readouterr().out.strip().endswith(": already built")
    for bad in (["--classes", "first9"], ["--image-size", "0"], ["--resize", "squash"], ["--data-root", str(tmp_path)]):
        with pytest.raises(SystemExit) as exc:
            raise SystemExit(main(argv[:2] + ["--data-root", str(tree), "--out", str(tmp_path / "other")] + bad))
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "error" in err, err
    assert not (tmp_path / "other").exists()


def test_torchrun_two_processes_give_the_same_store(torchrun, tree: Path, tmp_path: Path) -> None:
    args = [
        "prepare",
        "imagenet100",
        "--data-root",
        str(tree),
        "--classes",
        "all",
        "--image-size",
        "16",
        "--chunk-size",
        "3",
        "--workers",
        "1",
    ]
    assert main(args + ["--out", str(tmp_path / "one")]) == 0
    done = torchrun([*args, "--out", str(tmp_path / "two")], timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2 process(es)" in done.stdout and done.stdout.count("imagenet100:") == 1
    assert tree_bytes(tmp_path / "one") == tree_bytes(tmp_path / "two")
