"""`unlearnable recover`: estimate DATA's class-wise blur kernels and deconvolve it (the deconv defense)."""

from __future__ import annotations

import argparse

from unlearnable import params as P
from unlearnable.params import Interval


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "recover", help="estimate the class-wise blur kernels of DATA and deconvolve it (deconv defense)"
    )
    p.add_argument("data", metavar="DATA", help="a (poisoned) dataset: a saved dataset directory, a name or a path")
    p.add_argument(
        "--out", required=True, metavar="DIR", help="output saved dataset (written atomically), with kernels.png"
    )
    p.add_argument(
        "--kernel-size", type=Interval(int, 1, 9, odd=True), help="odd kernel size (default: search up to 9)"
    )
    p.add_argument(
        "--regularization",
        type=P.POSITIVE,
        help="lambda > 0 of the inversion (default 0.001 for exact, 0.01 for wiener)",
    )
    p.add_argument(
        "--method",
        choices=("border", "spectrum"),
        default="border",
        help="kernel estimator: border (zero-padding drop of the class mean, default) or spectrum "
        "(class power spectra, for blurs without a border cue)",
    )
    p.add_argument(
        "--inversion",
        choices=("auto", "exact", "wiener"),
        default="auto",
        help="exact (the blur as the linear map it was, zero padding included; images up to 64x64), "
        "wiener (Fourier, any size) or auto (exact where it fits, default)",
    )
    p.add_argument("--data-root", metavar="DIR", help="where the clean source dataset lives (evaluation only)")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> None:
    from unlearnable.app.recover import recover_command

    lines = recover_command(
        args.data,
        args.out,
        args.kernel_size,
        args.regularization,
        args.method,
        args.inversion,
        args.data_root,
        args.overwrite,
    )
    print("\n".join(lines))
