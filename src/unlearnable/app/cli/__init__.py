"""The `unlearnable` command line.

Every command is a thin wrapper over a library function. Bad input ends in one line on stderr naming
the problem and the fix, exit code 2, and nothing half-written on disk.
"""

from __future__ import annotations

import argparse
import inspect
import shlex
import sys
import time
from pathlib import Path

from unlearnable import __version__
from unlearnable.app.cli import owner as cli_owner
from unlearnable import params as P
from unlearnable.params import Interval
from unlearnable.errors import UserInputError


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (plus a pointer to --help), exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, metavar="SPEC",
                   help="dataset name (cifar10, cifar100, fashion-mnist), an ImageFolder directory or "
                        ".tar/.tar.gz archive (with train/ and test/), or a saved dataset directory")
    p.add_argument("--data-root", metavar="DIR", help="where named datasets live or are downloaded to")


ATTACK_OPTIONS = ("kernel_size", "blur_parameter", "grayscale", "eps", "norm", "patch_size")
"""Attack-specific options: default None (not given); each goes only to the attacks that take it."""


def add_training_run_args(p: argparse.ArgumentParser, out: str) -> None:
    """--data-root, --seed, --device and --out (default `out`) of the commands that train several runs."""
    p.add_argument("--data-root", metavar="DIR")
    p.add_argument("--seed", type=P.SEED, default=0)
    p.add_argument("--device", type=P.device, default=None)
    p.add_argument("--out", default=out, metavar="DIR", help=f"output directory (default {out})")


def add_attack_args(p: argparse.ArgumentParser) -> None:
    from unlearnable.attacks import ATTACKS
    p.add_argument("--attack", default="cuda", help=f"attack name ({', '.join(ATTACKS)}); default cuda")
    p.add_argument("--kernel-size", type=P.KERNEL_SIZE, help="cuda/vuda/huda: odd kernel size k (default 3; paper: 3 for 32×32, 9 for 224×224)")
    p.add_argument("--blur-parameter", type=P.POSITIVE, help="cuda/vuda/huda: p_b, kernel entries are U[0, p_b) (default 0.3; 0.06 for ImageNet-100)")
    p.add_argument("--seed", type=P.SEED, default=0, help="seed of the key (cuda: RandomState seed, 0 is the published key)")
    p.add_argument("--mix", type=P.FRACTION, default=1.0, help="fraction of training images poisoned, in (0, 1]")
    p.add_argument("--grayscale", action="store_true", default=None, help="cuda/vuda/huda: channel mean after the blur")
    p.add_argument("--eps", type=P.POSITIVE, help="noise: L∞ bound of the class patterns (default 8/255); lsp: per-value RMS, "
                                             "every perturbation has L2 norm √(C·H·W)·eps (default 6/255)")
    p.add_argument("--norm", type=P.POSITIVE, help="ar: L2 norm of every perturbation over C·H·W in [0, 1] units (default 1.0)")
    p.add_argument("--patch-size", type=P.POSITIVE_INT, help="lsp: side of the constant patches (default ⌈min(H, W)/4⌉: 8 for 32×32)")
    p.add_argument("--device", type=P.device, default=None, help="cpu or cuda (default: cuda when available)")


def attack_params(args: argparse.Namespace) -> dict:
    """seed, mix and the attack options given; one the attack does not take is a UserInputError."""
    from unlearnable.attacks import ATTACKS
    takes = inspect.signature(ATTACKS.get(args.attack)).parameters
    params = {"seed": args.seed, "mix": args.mix}
    for name in ATTACK_OPTIONS:
        if getattr(args, name) is None:
            continue
        if name not in takes:
            own = [f"--{n.replace('_', '-')}" for n in ATTACK_OPTIONS if n in takes]
            raise UserInputError(f"--{name.replace('_', '-')} does not apply to --attack {args.attack}; "
                                 f"it takes {', '.join(own + ['--seed', '--mix'])}")
        params[name] = getattr(args, name)
    return params


def cmd_poison(args: argparse.Namespace) -> None:
    from unlearnable.app.poison import poison_command
    t = time.perf_counter()
    ds = poison_command(args.data, args.attack, args.out, args.data_root, args.format, args.overwrite,
                        args.device, **attack_params(args))
    n = len(ds.meta["poisoned_indices"])
    print(f"{args.attack}: poisoned {n} of {len(ds)} training images in {time.perf_counter() - t:.1f} s "
          f"-> {args.out} (the key is in {Path(args.out) / 'meta.json'}; keep it private)")


def cmd_prepare(args: argparse.Namespace) -> None:
    from unlearnable import distributed
    from unlearnable.data import is_saved_dataset, load_saved
    from unlearnable.data.imagenet import build_store
    world = distributed.init()
    built = is_saved_dataset(args.out)  # then only checked against the settings and returned
    resumed = Path(f"{args.out}.partial").is_dir()
    t = time.perf_counter()
    store = build_store(args.data_root, args.out, args.classes, args.image_size, args.resize, args.val_labels,
                        args.workers, args.chunk_size, world=world)
    seconds = time.perf_counter() - t
    if world.main:
        train, n_val = load_saved(store), len(load_saved(store, "test"))
        n_train = len(train)
        print(f"{args.dataset}: {n_train} train and {n_val} val images of {train.num_classes} classes "
              f"at {args.image_size}×{args.image_size} ({args.resize}) -> {store}: "
              + ("already built" if built else f"{seconds:.1f} s, {(n_train + n_val) / seconds:.0f} img/s"
                 + (" (resumed)" if resumed else "") + f", {world.size} process(es)"))


def cmd_recover(args: argparse.Namespace) -> None:
    from unlearnable.defenses.deconv import recover_command
    print("\n".join(recover_command(args.data, args.out, args.kernel_size, args.regularization, args.method,
                                    args.data_root, args.overwrite)))


def cmd_show(args: argparse.Namespace) -> None:
    from unlearnable.app.show import show_command
    path = show_command(args.dir, args.out, args.defense, args.per_class, args.classes, args.data_root, args.seed)
    print(f"wrote {path}")


def cmd_demo(args: argparse.Namespace) -> None:
    from unlearnable.app.experiments import DEMO, run_table1, summarize
    from unlearnable.app.report import write_report
    t = time.perf_counter()
    runs = run_table1(args.data, args.out, DEMO, args.data_root, device=args.device)
    md, html = write_report(runs, Path(args.out) / "report", title=f"CPU demo: Table 1 conditions on {args.data}")
    print("\n".join(summarize(runs)))
    print(f"total {time.perf_counter() - t:.0f} s; report: {md} and {html}")


def recipe_overrides(args: argparse.Namespace) -> dict:
    """Recipe fields given on the command line (None = keep the recipe's value)."""
    fields = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
              "weight_decay": args.weight_decay}
    return {k: v for k, v in fields.items() if v is not None}


def adversarial_config(args: argparse.Namespace) -> dict | None:
    if args.adversarial is None:
        return None
    eps = args.eps if args.eps is not None else (4 / 255 if args.adversarial == "linf" else 0.5)
    return {"norm": args.adversarial, "eps": eps, "steps": args.at_steps}


def defense_options(args: argparse.Namespace) -> dict:
    """Options of the --defense chain given on the command line (absent = the defense's default)."""
    options = {"steps": args.steps, "filter_size": args.filter_size, "mix_alpha": args.mix_alpha,
               "imagenet_variant": True if args.imagenet_variant else None}
    if args.adversarial is None:
        options["eps"] = args.eps  # with --adversarial, --eps is that attack's radius
    return {k: v for k, v in options.items() if v is not None}


def cmd_train(args: argparse.Namespace) -> None:
    from unlearnable import distributed
    from unlearnable.data import load_dataset, stratified_subset
    from unlearnable.defenses import training_defense
    from unlearnable.models import MODELS
    from unlearnable.training.trainer import TrainConfig, resolve_recipe, train
    MODELS.check(args.model)  # these three fail before any data is read
    recipe = resolve_recipe(args.recipe, **recipe_overrides(args))
    training_defense(args.defense, **defense_options(args))
    world = distributed.init()
    test_spec = args.test or args.train
    with distributed.main_first(world):  # rank 0 fills the decode cache, the others then read it
        train_set = load_dataset(args.train, "train", args.data_root)
        test_set = load_dataset(test_spec, "test", args.data_root)
    if args.train_per_class:
        train_set = stratified_subset(train_set, args.train_per_class, args.seed)
    if args.test_per_class:
        test_set = stratified_subset(test_set, args.test_per_class, args.seed)
    config = TrainConfig(out=args.out, model=args.model, defense=args.defense, defense_options=defense_options(args),
                         recipe=recipe, seed=args.seed, device=args.device, adversarial=adversarial_config(args),
                         rotate=args.rotate, augment=args.augment, data_placement=args.data_placement,
                         sync_batchnorm=args.sync_batchnorm, name=args.name or Path(args.out).name,
                         train=args.train, test=test_spec)
    results = train(config, train_set, test_set, resume=args.resume)
    final = results["final"]
    if world.main:
        print(f"{config.name}: test accuracy {final['test_acc_last']:.2f}% (best {final['test_acc_best']:.2f}% "
              f"at epoch {final['best_epoch']}) in {final['wall_seconds']:.0f} s -> {Path(args.out) / 'results.json'}")


def cmd_reproduce(args: argparse.Namespace) -> None:
    import dataclasses
    from unlearnable import distributed
    from unlearnable.app.experiments import IMAGENET100, Protocol, run_table1
    from unlearnable.app.report import write_report
    base = IMAGENET100 if args.dataset == "imagenet100" else Protocol()
    protocol = dataclasses.replace(base, model=args.model or base.model, recipe=args.recipe,
                                   overrides={"epochs": args.epochs} if args.epochs is not None else {},
                                   rotate=args.dataset == "cifar100" or args.rotate)
    source = args.source or args.dataset
    runs = run_table1(source, args.out, protocol, args.data_root, args.seed, args.device)
    if distributed.init().main:
        md, html = write_report(runs, Path(args.out) / "report", title=f"Table 1 on {source}")
        print(f"report: {md} and {html}")


def cmd_report(args: argparse.Namespace) -> None:
    from unlearnable.app.report import load_run, write_report
    runs = [Path(r) for r in args.runs]
    for run in runs:
        if not run.is_dir():
            raise UserInputError(f"{run} is not a directory; pass training run directories (from `unlearnable train`)")
        note = load_run(run)
        if isinstance(note, str):
            raise UserInputError(f"{note.removesuffix(' not shown.').rstrip(';. ')}: {run} is not a training run; "
                                 f"pass run directories written by `unlearnable train`")
    md, html = write_report(runs, Path(args.out), title=args.title)
    print(f"report: {md} and {html}")


def cmd_audit(args: argparse.Namespace) -> None:
    from unlearnable.app.audit import run_audit
    from unlearnable.app.report import write_report
    t = time.perf_counter()
    line, table = run_audit(args.data, args.out, args.budget, args.clean, args.test, args.data_root, args.seed,
                            args.device, image_size=args.image_size)
    runs = sorted(Path(args.out).glob("runs/*/*"))
    md, html = write_report(runs, Path(args.out) / "report", title=f"Audit of {args.data}")
    print("\n".join(table))
    print(f"verdict: {line}")
    print(f"total {time.perf_counter() - t:.0f} s; report: {md} and {html}")


def cmd_detect(args: argparse.Namespace) -> None:
    from unlearnable.analysis.detect import detect_command
    from unlearnable.io import check_file_output, is_own_json
    if args.out:  # both files may replace only an earlier detect's
        inputs = [args.data, args.reference or args.data]
        check_file_output(Path(args.out) / "detect.json", inputs, ".json", is_own=lambda p: is_own_json(p, "verdict"))
        check_file_output(Path(args.out) / "detect_spectra.png", inputs)
    detection = detect_command(args.data, args.reference, args.data_root, args.out, args.seed, args.max_images,
                               args.device, image_size=args.image_size)
    print("\n".join(detection.lines()))
    if args.out:
        print(f"wrote {Path(args.out) / 'detect.json'} and {Path(args.out) / 'detect_spectra.png'}")


def cmd_compare(args: argparse.Namespace) -> None:
    from unlearnable.attacks import ATTACKS
    from unlearnable.app.audit import BUDGETS, fitted_protocol
    from unlearnable.defenses import training_defense
    from unlearnable.app.experiments import grid_table, prepare_data, run_grid
    from unlearnable.app.report import write_report
    plan = BUDGETS[args.budget]
    defenses = plan.defenses if args.defenses is None else {name: plan.defenses.get(name, {"defense": name})
                                                            for name in args.defenses.split(",")}
    for settings in defenses.values():
        training_defense(settings["defense"], **settings.get("defense_options", {}))  # fail before any work
    poisons = {name: (name, {}) for name in args.poisons.split(",")}
    for attack in poisons:
        ATTACKS.get(attack)
    t = time.perf_counter()
    protocol = fitted_protocol(plan.protocol, training_images(args.data, args.data_root, plan.protocol.train_per_class))
    data = prepare_data(args.data, Path(args.out), protocol, args.data_root, poisons)
    runs = run_grid(data, defenses, args.out, protocol, args.seed, args.device)
    md, html = write_report(list(runs.values()), Path(args.out) / "report", title=f"Defenses × poisons on {args.data}")
    table = "\n".join(grid_table(runs))
    (Path(args.out) / "table.md").write_text(table + "\n")
    print(table)
    print(f"total {time.perf_counter() - t:.0f} s; report: {md} and {html}")


def training_images(spec: str, data_root: str | None, per_class: int | None) -> int:
    """How many training images a protocol taking `per_class` per class gets from `spec`."""
    import numpy as np
    from unlearnable.data import load_dataset
    train = load_dataset(spec, "train", data_root)
    counts = np.bincount(train.labels.numpy(), minlength=train.num_classes)
    return int(np.minimum(counts, per_class).sum()) if per_class else len(train)


def cmd_list(args: argparse.Namespace) -> None:
    from unlearnable.attacks import ATTACKS
    from unlearnable.data import DATASET_NAMES
    from unlearnable.defenses import defense_kinds
    print("datasets:", ", ".join(DATASET_NAMES), "(or a path)")
    print("attacks: ", ", ".join(sorted(ATTACKS)))
    print("defenses: 'none' or a '+'-chain, e.g. rsk+ff, rsk+ff+coin, cutmix, rsk+ff+at-linf; by kind:")
    for kind, names in defense_kinds().items():
        print(f"  {kind}: {', '.join(names)}")


def build_parser() -> Parser:
    parser = Parser(prog="unlearnable", description="Make image datasets unlearnable and test whether they stay that way.")
    parser.add_argument("--version", action="version", version=f"unlearnable {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("poison", help="protect a dataset's training split and save it with its key")
    add_data_args(p)
    add_attack_args(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (written atomically)")
    p.add_argument("--format", default="npy", choices=("npy", "png"),
                   help="npy: arrays only; png: also an ImageFolder of lossless PNGs in DIR/png, named by index (to "
                        "publish a photo folder under its own file names and sizes, use `unlearnable protect`)")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    p.set_defaults(func=cmd_poison)

    p = sub.add_parser("prepare", help="build the memory-mapped ImageNet-100 store from an ImageNet folder (once; "
                                       "resumable; torchrun splits the work)")
    p.add_argument("dataset", choices=("imagenet100",), help="the dataset to prepare")
    p.add_argument("--data-root", required=True, metavar="DIR",
                   help="ImageNet folder with train/<wnid>/ and val/ (wnid folders, or flat with LOC_val_solution.csv)")
    p.add_argument("--out", required=True, metavar="STORE", help="the store directory (built in STORE.partial)")
    p.add_argument("--classes", default="first100", metavar="SUBSET",
                   help="first100 (CUDA paper, default), cmc100 (CMC's ImageNet-100), all, firstN, or a file of wnids")
    p.add_argument("--image-size", type=P.IMAGE_SIZE, default=224, help="side S of the S×S images (default 224)")
    p.add_argument("--resize", default="stretch", choices=("stretch", "crop"),
                   help="stretch: resize to S×S (CUDA paper, default); crop: shorter side to S, then center crop")
    p.add_argument("--val-labels", metavar="FILE", help="labels of a flat val/: lines '<file name> <wnid>'")
    p.add_argument("--workers", type=int, help="decode threads per process (default: the CPUs per process)")
    p.add_argument("--chunk-size", type=int, default=1024, metavar="N",
                   help="images per chunk, the unit of resuming and of splitting across processes; each process "
                        "holds about 2 chunks in memory (default 1024: 300 MB at 224×224)")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("recover", help="estimate the class-wise blur kernels of DATA and deconvolve it (deconv defense)")
    p.add_argument("data", metavar="DATA", help="a (poisoned) dataset: a saved dataset directory, a name or a path")
    p.add_argument("--out", required=True, metavar="DIR", help="output saved dataset (written atomically), with kernels.png")
    p.add_argument("--kernel-size", type=Interval(int, 1, 9, odd=True), help="odd kernel size (default: search up to 9)")
    p.add_argument("--regularization", type=P.POSITIVE, default=0.01, help="Tikhonov lambda > 0 (default 0.01)")
    p.add_argument("--method", choices=("border", "spectrum"), default="border",
                   help="kernel estimator: border (zero-padding drop of the class mean, default) or spectrum "
                        "(class power spectra, for blurs without a border cue)")
    p.add_argument("--data-root", metavar="DIR", help="where the clean source dataset lives (evaluation only)")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    p.set_defaults(func=cmd_recover)

    p = sub.add_parser("show", help="PNG grid of clean vs poisoned vs defended samples per class")
    p.add_argument("dir", metavar="DIR", help="a saved dataset (from `unlearnable poison`)")
    p.add_argument("--out", metavar="PNG", help="output picture (default DIR-samples.png beside DIR)")
    p.add_argument("--defense", default="rsk+ff", help="defense for the third column (default rsk+ff)")
    p.add_argument("--per-class", type=Interval(int, 1, 100), default=1, help="samples per class (default 1)")
    p.add_argument("--classes", type=Interval(int, 1, 1000), default=10, help="show at most this many classes (default 10)")
    p.add_argument("--data-root", metavar="DIR", help="where the clean source dataset lives")
    p.add_argument("--seed", type=P.SEED, default=0, help="seed of the defense's randomness")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("demo", help="the quick CPU protocol: clean, CUDA, CUDA+AT, CUDA+RSK+FF on CIFAR-10, and the report")
    p.add_argument("--data", default="cifar10",
                   help="dataset (default cifar10: found under --data-root or downloaded; a CIFAR-10 ImageFolder "
                        "archive works too)")
    p.add_argument("--data-root", metavar="DIR")
    p.add_argument("--device", type=P.device, default=None)
    p.add_argument("--out", default="out/demo", metavar="DIR", help="output directory (default out/demo)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train a model on a (protected) dataset with a defense; writes RUN/results.json")
    p.add_argument("--train", required=True, metavar="DATA", help="training data: dataset name, path, or saved (protected) dataset")
    p.add_argument("--test", metavar="DATA", help="test data (default: the test split of --train)")
    p.add_argument("--data-root", metavar="DIR")
    p.add_argument("--defense", default="none",
                   help="defense chain, e.g. rsk+ff, cutmix, rsk+ff+at-linf, dat, ueraser (default none; "
                        "`unlearnable list` shows every name)")
    p.add_argument("--model", default="resnet18", help="model name (default resnet18)")
    p.add_argument("--recipe", default="paper", help="paper, cuda-paper or quick (default paper)")
    p.add_argument("--epochs", type=P.POSITIVE_INT, help="override the recipe's epochs")
    p.add_argument("--batch-size", type=P.POSITIVE_INT, help="override the recipe's batch size")
    p.add_argument("--lr", type=P.POSITIVE, help="override the recipe's learning rate")
    p.add_argument("--weight-decay", type=P.NONNEGATIVE, help="override the recipe's weight decay")
    p.add_argument("--adversarial", choices=("linf", "l2"), help="PGD adversarial training")
    p.add_argument("--eps", type=P.POSITIVE, help="PGD radius of --adversarial or of at-linf / at-l2 in --defense "
                                             "(default 4/255 for linf, 0.5 for l2)")
    p.add_argument("--at-steps", type=P.POSITIVE_INT, default=10, help="PGD steps of --adversarial (default 10)")
    p.add_argument("--steps", type=P.POSITIVE_INT, help="steps of at-linf, at-l2 or dat in --defense (default 10)")
    p.add_argument("--filter-size", type=int, choices=(3, 5, 7), help="dat's filter size: 3, 5 or 7 (default 5)")
    p.add_argument("--mix-alpha", type=P.POSITIVE, help="mixup / cutmix: λ ~ Beta(α, α) (default 1: uniform)")
    p.add_argument("--imagenet-variant", action="store_true",
                   help="ff keeps int(0.4·N·p/100) frequencies per axis, the published ImageNet-100 setting")
    p.add_argument("--rotate", action="store_true", help="RandomRotation(15°) after the flip (the CIFAR-100 recipe)")
    p.add_argument("--augment", default="auto", choices=("auto", "crop", "resized-crop"),
                   help="crop: RandomCrop(pad 4) (CIFAR); resized-crop: RandomResizedCrop (ImageNet); auto: "
                        "resized-crop for images of at least 64×64 (default)")
    p.add_argument("--data-placement", default="auto", choices=("auto", "device", "stream"),
                   help="device: copy the training images to the device; stream: read batches from the (memory-mapped) "
                        "dataset; auto: device when they fit (default)")
    p.add_argument("--sync-batchnorm", action="store_true",
                   help="under torchrun: BatchNorm statistics over the global batch (CUDA only)")
    p.add_argument("--train-per-class", type=P.POSITIVE_INT, help="train on a stratified subset of this many images per class")
    p.add_argument("--test-per-class", type=P.POSITIVE_INT, help="test on a stratified subset of this many images per class")
    p.add_argument("--seed", type=P.SEED, default=0)
    p.add_argument("--device", type=P.device, default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--name", help="run name in reports (default: the --out folder name)")
    p.add_argument("--out", required=True, metavar="RUN", help="run directory (results.json, checkpoint.pt)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in RUN")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("reproduce", help="the paper's Table 1: clean, CUDA, CUDA+AT, CUDA+RSK+FF, and the report")
    p.add_argument("--dataset", required=True,
                   help="cifar10, cifar100 or imagenet100 (with --data-root: an ImageNet folder or a store from "
                        "`unlearnable prepare`), or a path, e.g. the CIFAR-10 JPEG archive")
    p.add_argument("--source", help="read the dataset from this path instead (e.g. ../shared/data/cifar10-jpeg.tar.gz)")
    p.add_argument("--data-root", metavar="DIR")
    p.add_argument("--epochs", type=P.POSITIVE_INT, help="override the recipe's epochs (paper: 60)")
    p.add_argument("--model", help="default resnet18 (CIFAR), resnet18-imagenet (imagenet100)")
    p.add_argument("--recipe", default="paper")
    p.add_argument("--rotate", action="store_true", help="RandomRotation(15°) (always on for cifar100)")
    p.add_argument("--seed", type=P.SEED, default=0)
    p.add_argument("--device", type=P.device, default=None)
    p.add_argument("--out", default="out/reproduce", metavar="DIR")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("report", help="Markdown + HTML report of training runs")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (with results.json)")
    p.add_argument("--out", default="out/report", metavar="DIR")
    p.add_argument("--title")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("audit", help="train against every defense; verdict: does the protection hold?")
    p.add_argument("data", metavar="DATA", help="the protected dataset (e.g. from `unlearnable poison`)")
    p.add_argument("--budget", default="quick", choices=("quick", "full"),
                   help="quick: small CNN at 32×32 on up to 500 images per class, batch fitted to the data, ~20 min "
                        "on 2 CPU cores; full: ResNet-18, paper recipe, all data at its own size (GPU)")
    p.add_argument("--image-size", type=P.IMAGE_SIZE, metavar="S",
                   help="working image side: every image is stretched to S×S (bilinear), so a collection of mixed "
                        "sizes can be audited (default: 32 for --budget quick, the data's own size for full)")
    p.add_argument("--clean", metavar="SPEC", help="the clean training data DATA was made from (default: the "
                                                  "source recorded in DATA)")
    p.add_argument("--test", metavar="SPEC", help="clean test data (default: DATA's test split)")
    add_training_run_args(p, "out/audit")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("detect", help="does DATA look convolution-poisoned (CUDA-like)? verdict plus evidence; exit 0 either way")
    p.add_argument("data", metavar="DATA", help="dataset name, ImageFolder directory or archive, or saved dataset; its train split is checked")
    p.add_argument("--reference", metavar="SPEC", help="clean images of the same classes and size (its test split when it has one); "
                                                       "default: DATA's test split")
    p.add_argument("--data-root", metavar="DIR")
    p.add_argument("--out", metavar="DIR", help="also write DIR/detect.json and DIR/detect_spectra.png")
    p.add_argument("--max-images", type=P.POSITIVE_INT, default=10_000, help="class-balanced cap on DATA and on the reference (default 10000)")
    p.add_argument("--seed", type=P.SEED, default=0, help="seeds the subsets and the edge detector's random keys")
    p.add_argument("--device", type=P.device, default=None, help="cpu or cuda (default cpu)")
    p.add_argument("--image-size", type=P.IMAGE_SIZE, metavar="S",
                   help="read DATA and the reference at S×S (bilinear stretch): needed for a collection of mixed "
                        "image sizes; check protected data at the size it was protected at")
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("compare", help="the defense × poison table: train every defense on every poison and on clean data")
    p.add_argument("--data", required=True, metavar="SPEC", help="the clean dataset to poison")
    p.add_argument("--poisons", default="cuda,ops,lsp,ar,noise", help="comma-separated attacks (default "
                                                                      "cuda,ops,lsp,ar,noise), each with its defaults")
    p.add_argument("--defenses", help="comma-separated defense chains (default: the audit battery of --budget)")
    p.add_argument("--budget", default="quick", choices=("quick", "full"), help="protocol as for `audit`")
    add_training_run_args(p, "out/compare")
    p.set_defaults(func=cmd_compare)

    cli_owner.register(sub)

    p = sub.add_parser("list", help="known datasets, attacks and defenses")
    p.set_defaults(func=cmd_list)
    return parser


def interrupted_note(args: argparse.Namespace, argv: list[str] | None = None) -> str:
    """What an interrupted command kept, and how to continue."""
    if args.command == "prepare":
        return f"the partial store {args.out}.partial is kept: run the same command to resume"
    if args.command in ("demo", "reproduce", "audit", "compare"):
        return (f"finished runs are kept under {args.out} and the run in progress at its last checkpoint: run the "
                f"same command to continue")
    if args.command == "protect":
        return (f"the finished files are kept in {Path(args.out).parent / ('.' + Path(args.out).name + '.partial')}: "
                f"run the same command to resume")
    if args.command == "train":
        from unlearnable.training.trainer import interrupted_message
        return interrupted_message(args.out, "unlearnable " + shlex.join(sys.argv[1:] if argv is None else argv))
    return "nothing was written"


def main(argv: list[str] | None = None) -> int:
    from unlearnable import distributed
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except UserInputError as e:
        print(f"unlearnable {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"unlearnable {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"unlearnable {args.command}: interrupted; {interrupted_note(args, argv)}", file=sys.stderr)
        return 130
    finally:
        distributed.finish()
    return code or 0
