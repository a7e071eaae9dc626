"""The data owner's audit: verdict rules, the battery's names, and a tiny end-to-end run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from unlearnable.app.audit import (
    BUDGETS,
    MAX_EPOCHS,
    MIN_EFFECT,
    WORKING_SIZE,
    Budget,
    cannot_judge,
    fit_batch_size,
    fit_epochs,
    fitted_protocol,
    judge_margin,
    run_audit,
    verdict,
)
from unlearnable.app.cli import main
from unlearnable.app.experiments import TrainingProtocol, check_protocol
from unlearnable.data import load_saved
from unlearnable.defenses import training_defense
from unlearnable.defenses.adversarial import AdversarialTraining
from unlearnable.defenses.chain import Identity
from unlearnable.errors import UserInputError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_verdict_rules():
    assert verdict(90.0, {"none": 20.0, "rsk+ff": 40.0, "coin": 30.0}).startswith(
        "protection holds: the best defense, rsk+ff"
    )
    line = verdict(90.0, {"none": 20.0, "rsk+ff": 55.0})
    assert line.startswith("protection broken by rsk+ff at 55.0%") and "35.0 of the 70.0 points" in line
    assert verdict(90.0, {"none": 85.0, "rsk+ff": 86.0}).startswith("no protection")


def test_too_little_data_cannot_be_judged():
    """The reported case: 600 images, clean training at chance; it used to read "no protection"."""
    line = verdict(10.0, {"none": 10.0, "deconv": 10.5}, chance=10.0, test_images=2000)
    assert line.startswith("cannot judge: clean training reaches only 10.0% on this little data (chance is 10.0%)")
    assert "\n" not in line
    # Clean training 25 points above chance on 2,000 test images is enough room to judge.
    assert verdict(35.0, {"none": 12.0, "deconv": 14.0}, chance=10.0, test_images=2000).startswith("protection holds")
    assert verdict(29.9, {"none": 12.0}, chance=10.0, test_images=2000).startswith("cannot judge")
    # Without chance the rules are the old ones (callers that know no test split).
    assert verdict(29.9, {"none": 12.0, "rsk+ff": 13.0}).startswith("protection holds")


def test_judge_margin():
    assert judge_margin(10.0, 2000) == 2 * MIN_EFFECT  # many test images: the effect size decides
    assert judge_margin(10.0, 20) == pytest.approx(300 * (0.09 / 20) ** 0.5)  # 20.1: the test noise decides
    assert judge_margin(50.0, 10) == pytest.approx(300 * (0.25 / 10) ** 0.5)
    assert cannot_judge(60.0, 50.0, 10) is not None and cannot_judge(98.0, 50.0, 10) is None


@pytest.mark.parametrize("images, batch", [(5000, 256), (20000, 256), (600, 32), (300, 16), (200, 8), (8, 8)])
def test_batch_fits_the_data(images, batch):
    assert fit_batch_size(images, 256) == batch


def test_small_data_trains_more_epochs():
    """Below the 5,000 images the quick budget was tuned at, a model sees as many images as there:
    80 epochs of 500, 34 of 1,192; never fewer than the recipe's, never more than MAX_EPOCHS."""
    assert [fit_epochs(n, 8) for n in (100, 500, 1192, 5000, 50_000)] == [MAX_EPOCHS, 80, 34, 8, 8]
    quick = BUDGETS["quick"].protocol
    assert fitted_protocol(quick, 500).overrides == {"epochs": 80, "batch_size": 16}
    assert fitted_protocol(quick, 5000) is quick  # the protocol the README's numbers were measured with
    assert "epochs" not in fitted_protocol(BUDGETS["full"].protocol, 500).overrides  # all the data: no subset


def test_fewer_images_than_a_batch_is_a_user_error():
    with pytest.raises(UserInputError, match="7 images; an audit trains models on batches of at least 8"):
        fit_batch_size(7, 256)


@pytest.mark.parametrize("budget", sorted(BUDGETS))
def test_every_battery_entry_builds(budget):
    """Every entry is a valid training run of the budget's protocol, and does something: only "none"
    leaves the batches alone; the budget's own settings (AT steps, UEraser draws, ortho-proj epochs) arrive."""
    plan = BUDGETS[budget]
    check_protocol(plan.protocol, plan.defenses.values())  # what a training run would refuse, refused here
    built = {name: training_defense(s["defense"], **s["defense_options"]) for name, s in plan.defenses.items()}
    for name, defense in built.items():
        parts = (defense.mix, defense.hook, defense.preprocess)
        untouched = all(p is None for p in parts) and all(
            isinstance(t, Identity) for t in (defense.before_crop, defense.after_crop)
        )
        assert untouched == (name == "none"), name
    at = built["at-linf"].hook
    assert isinstance(at, AdversarialTraining) and at.norm == "linf" and at.eps == pytest.approx(4 / 255)
    assert at.steps == {"quick": 2, "full": 10}[budget]
    assert built["ortho-proj"].preprocess.epochs == {"quick": 200, "full": 20}[budget]
    if budget == "quick":
        assert built["ueraser-lite"].hook.draws == 1
    else:
        assert built["at-linf-8"].hook.eps == pytest.approx(8 / 255) and built["at-l2"].hook.norm == "l2"
    assert plan.defenses["deconv"]["defense"] == "deconv"  # the strongest defense is in every battery
    assert budget in WORKING_SIZE


def test_audit_end_to_end(tiny_protocol, tiny_folder, tmp_path, monkeypatch, capsys):
    protected = tmp_path / "protected"
    assert main(["poison", "--data", str(tiny_folder), "--out", str(protected)]) == 0
    monkeypatch.setitem(
        BUDGETS,
        "quick",
        Budget(
            tiny_protocol,
            {
                "none": {"defense": "none", "defense_options": {}},
                "rsk+ff": {"defense": "rsk+ff", "defense_options": {}},
            },
        ),
    )
    assert main(["audit", str(protected), "--out", str(tmp_path / "audit")]) == 0
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert sorted(result["protected"]) == ["none", "rsk+ff"] and 0 <= result["clean"] <= 100
    # 24 random-noise training images and 6 test images of 3 classes: nothing to learn, nothing to judge.
    assert result["chance"] == pytest.approx(100 / 3) and result["judge_margin"] > 50
    assert result["verdict"].startswith("cannot judge: clean training reaches only")
    assert f"verdict: {result['verdict']} [quick budget at 32×32 (images stretched" in out
    assert result["image_size"] == [32, 32] and result["batch_size"] == 8
    copy = load_saved(tmp_path / "audit" / "data" / "protected")
    assert copy.shape == (3, 32, 32) and copy.meta["attack"] == "cuda"
    assert (tmp_path / "audit" / "report" / "report.html").is_file()
    recorded = {json.loads(path.read_text())["command"] for path in (tmp_path / "audit").glob("runs/*/*/results.json")}
    assert recorded == {f"unlearnable audit {protected} --out {tmp_path / 'audit'}"}


def _mixed_folder(root, classes=("a", "b"), per_class=6, seed=0):
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            w, h = (int(v) for v in rng.integers(12, 48, 2))
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / c / f"{i}.jpg")


def test_audit_of_a_mixed_size_collection(tiny_protocol, tmp_path, monkeypatch):
    _mixed_folder(tmp_path / "photos" / "train", per_class=8)
    _mixed_folder(tmp_path / "photos" / "test", per_class=3, seed=1)
    monkeypatch.setitem(BUDGETS, "quick", Budget(tiny_protocol, {"none": {"defense": "none", "defense_options": {}}}))
    line, table = run_audit(
        str(tmp_path / "photos"), tmp_path / "audit", clean=str(tmp_path / "photos"), progress=False
    )
    assert line.startswith("cannot judge") and "quick budget at 32×32" in line and "16 training and 6 test" in line
    assert table[0] == "| defense | clean | protected |"
    assert load_saved(tmp_path / "audit" / "data" / "clean").shape == (3, 32, 32)
    # A published folder of class folders, with the clean test photos named by --test as a folder too.
    line, _ = run_audit(
        str(tmp_path / "photos" / "train"),
        tmp_path / "audit-folders",
        clean=str(tmp_path / "photos" / "train"),
        test=str(tmp_path / "photos" / "test"),
        progress=False,
    )
    assert "16 training and 6 test" in line
    # The same collection at its own size is refused with the option to use.
    with pytest.raises(UserInputError, match="--image-size"):
        run_audit(str(tmp_path / "photos"), tmp_path / "audit-full", "full", clean=str(tmp_path / "photos"))


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"budget": "huge"}, "--budget 'huge' is unknown"),
        ({"seed": -1}, "seed"),
        ({"device": "tpu"}, "device"),
        ({"image_size": 2}, "--image-size"),
        ({"protocol": TrainingProtocol(model="nope")}, "unknown model 'nope'"),
        ({"defense": "sharpen"}, "unknown defense"),
    ],
)
def test_bad_arguments_fail_before_any_copy(tiny_protocol, tiny_folder, tmp_path, monkeypatch, kwargs, needle):
    protected = tmp_path / "protected"
    assert main(["poison", "--data", str(tiny_folder), "--out", str(protected)]) == 0
    protocol = kwargs.pop("protocol", tiny_protocol)
    defense = kwargs.pop("defense", "none")
    monkeypatch.setitem(BUDGETS, "quick", Budget(protocol, {"none": {"defense": defense, "defense_options": {}}}))
    with pytest.raises(UserInputError, match=needle):
        run_audit(str(protected), tmp_path / "audit", progress=False, **kwargs)
    assert not (tmp_path / "audit").exists()


def test_output_that_is_a_file_is_refused(tiny_folder, tmp_path):
    (tmp_path / "audit").write_text("not a folder")
    with pytest.raises(UserInputError, match="is a file"):
        run_audit(str(tiny_folder), tmp_path / "audit", clean=str(tiny_folder))


def test_audit_without_a_clean_reference_is_a_clear_error(tiny_folder, tmp_path, capsys):
    code = main(["audit", str(tiny_folder), "--out", str(tmp_path / "audit")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--clean" in err
    assert not (tmp_path / "audit").exists()


def test_compare_command_writes_the_table(tiny_protocol, tiny_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(BUDGETS, "quick", Budget(tiny_protocol, {}))
    out = tmp_path / "cmp"
    assert (
        main(
            [
                "compare",
                "--data",
                str(tiny_folder),
                "--poisons",
                "cuda,huda",
                "--defenses",
                "none,gray",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    lines = (out / "table.md").read_text().splitlines()
    assert lines[0] == "| defense | clean | cuda | huda |" and [line.split("|")[1].strip() for line in lines[2:]] == [
        "none",
        "gray",
    ]
    assert json.loads((out / "runs" / "huda" / "gray" / "results.json").read_text())["config"]["defense"] == "gray"
    assert lines[0] in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, needle",
    [(["--poisons", "cuda,blur"], "unknown attack 'blur'"), (["--defenses", "none,sharpen"], "unknown defense")],
)
def test_compare_bad_names_fail_before_any_work(tiny_folder, tmp_path, capsys, args, needle):
    code = main(["compare", "--data", str(tiny_folder), "--out", str(tmp_path / "cmp"), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "cmp").exists()
