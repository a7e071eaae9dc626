"""The data owner's audit: verdict rules, the battery's names, and a tiny end-to-end run."""

from __future__ import annotations

import json

import pytest

from unlearnable.audit import BUDGETS, Budget, run_audit, verdict
from unlearnable.cli import main
from unlearnable.defenses import training_defense
from unlearnable.experiments import Protocol

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = Protocol(model="small", recipe="quick", overrides={"epochs": 1, "batch_size": 8, "test_batch_size": 8})


def test_verdict_rules():
    assert verdict(90.0, {"none": 20.0, "rsk+ff": 40.0, "coin": 30.0}).startswith("protection holds: the best defense, rsk+ff")
    line = verdict(90.0, {"none": 20.0, "rsk+ff": 55.0})
    assert line.startswith("protection broken by rsk+ff at 55.0%") and "35.0 of the 70.0 points" in line
    assert verdict(90.0, {"none": 85.0, "rsk+ff": 86.0}).startswith("no protection")


@pytest.mark.parametrize("budget", sorted(BUDGETS))
def test_every_battery_entry_builds(budget):
    for settings in BUDGETS[budget].defenses.values():
        training_defense(settings["defense"], **settings["defense_options"])


def test_audit_end_to_end(tiny_folder, tmp_path, monkeypatch, capsys):
    protected = tmp_path / "protected"
    assert main(["poison", "--data", str(tiny_folder), "--out", str(protected)]) == 0
    monkeypatch.setitem(BUDGETS, "quick", Budget(TINY, {"none": {"defense": "none", "defense_options": {}},
                                                      "rsk+ff": {"defense": "rsk+ff", "defense_options": {}}}))
    assert main(["audit", str(protected), "--out", str(tmp_path / "audit")]) == 0
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert sorted(result["protected"]) == ["none", "rsk+ff"] and 0 <= result["clean"] <= 100
    assert f"verdict: {result['verdict']}" in out
    assert (tmp_path / "audit" / "report" / "report.html").is_file()


def test_audit_without_a_clean_reference_is_a_clear_error(tiny_folder, tmp_path, capsys):
    code = main(["audit", str(tiny_folder), "--out", str(tmp_path / "audit")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--clean" in err
    assert not (tmp_path / "audit").exists()


def test_compare_command_writes_the_table(tiny_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(BUDGETS, "quick", Budget(TINY, {}))
    out = tmp_path / "cmp"
    assert main(["compare", "--data", str(tiny_folder), "--poisons", "cuda,huda", "--defenses", "none,gray",
                 "--out", str(out)]) == 0
    lines = (out / "table.md").read_text().splitlines()
    assert lines[0] == "| defense | clean | cuda | huda |" and [l.split("|")[1].strip() for l in lines[2:]] == ["none", "gray"]
    assert json.loads((out / "runs" / "huda" / "gray" / "results.json").read_text())["config"]["defense"] == "gray"
    assert lines[0] in capsys.readouterr().out


@pytest.mark.parametrize("args, needle", [(["--poisons", "cuda,blur"], "unknown attack 'blur'"),
                                          (["--defenses", "none,sharpen"], "unknown defense")])
def test_compare_bad_names_fail_before_any_work(tiny_folder, tmp_path, capsys, args, needle):
    code = main(["compare", "--data", str(tiny_folder), "--out", str(tmp_path / "cmp"), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "cmp").exists()
