"""`unlearnable recover`: deconvolve a poisoned training set into a saved dataset, with a kernel figure.

The deconvolution itself is the library's `unlearnable.defenses.deconv.Deconvolver`; this module
writes the files and says what happened. `diagnostics` and `replay` are re-exported for the report.
"""

from __future__ import annotations

import torch

from unlearnable.defenses.deconv import Deconvolver, diagnostics, replay

__all__ = ["diagnostics", "kernels_png", "recover_command", "replay"]


def kernels_png(estimated: torch.Tensor, true: torch.Tensor | None) -> bytes:
    """PNG of the estimated kernels (top row) and, when known, the true ones (bottom row), one column per class (≤ 20)."""
    import matplotlib.pyplot as plt

    from unlearnable.figures import png_bytes  # selects the Agg backend before pyplot is imported

    rows = [("estimated", estimated[:20])] + (
        [("true", (true / true.sum(dim=(1, 2), keepdim=True))[:20])] if true is not None else []
    )
    columns = len(rows[0][1])
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.2 * columns, 1.3 * len(rows)), squeeze=False)
    vmax = float(max(kernels.max() for _, kernels in rows))
    for r, (name, kernels) in enumerate(rows):
        for c, kernel in enumerate(kernels):
            axes[r, c].imshow(kernel.cpu().numpy(), cmap="viridis", vmin=0, vmax=vmax)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            axes[r, c].set_title(f"{name} {c}", fontsize=7)
    fig.tight_layout()
    return png_bytes(fig, dpi=100)


def recover_command(
    data: str,
    out: str,
    kernel_size: int | None = None,
    regularization: float | None = None,
    method: str = "border",
    inversion: str = "auto",
    data_root: str | None = None,
    overwrite: bool = False,
) -> list[str]:
    """`unlearnable recover`: deconvolve DATA's training split into the saved dataset `out`.

    Writes `out` atomically (with the estimated kernels in meta.json under "deconv") and
    ``out/kernels.png``. The key (DATA's meta "kernels" and "poisoned_indices") and the clean source
    are used only to evaluate (`diagnostics`). Returns the lines to print.
    """
    from unlearnable.data import load_dataset, save_dataset
    from unlearnable.data.lineage import load_source
    from unlearnable.io import atomic_directory, check_output

    deconvolver = Deconvolver(
        kernel_size, regularization, method, inversion
    )  # bad options fail before any data is read
    check_output(out, overwrite, inputs=[data])
    poisoned = load_dataset(data, "train", data_root)
    recovered = deconvolver.fit_transform(poisoned)
    estimated = torch.tensor(recovered.meta["deconv"]["kernels"])
    true = torch.tensor(poisoned.meta["kernels"], dtype=torch.float32) if "kernels" in poisoned.meta else None
    with atomic_directory(out, overwrite, inputs=[data], kind="saved dataset") as tmp:
        save_dataset(tmp, recovered)
        (tmp / "kernels.png").write_bytes(
            kernels_png(estimated, true if true is not None and true.shape == estimated.shape else None)
        )
    lines = [
        f"deconvolved {recovered.meta['deconv']['deconvolved']} of {len(recovered)} images with "
        f"{estimated.shape[-1]}×{estimated.shape[-1]} kernels ({method}) -> {out}"
    ]
    if true is None:
        return lines
    found = diagnostics(poisoned, recovered, load_source(poisoned, data_root))
    lines.append(
        f"the key says {found['poisoned']} were poisoned; {found['hits']} of them were deconvolved, "
        f"and {found['false_alarms']} clean images"
    )
    for c in range(poisoned.num_classes):
        parts = [f"class {c}:"]
        if found["kernel_error"] is not None:
            parts.append(f"kernel error {100 * found['kernel_error'][c]:.1f}%")
        if "psnr_recovered" in found and found["psnr_recovered"][c] is not None:
            parts.append(
                f"PSNR recovered {found['psnr_recovered'][c]:.2f} dB (poisoned {found['psnr_poisoned'][c]:.2f} dB)"
            )
        if len(parts) > 1:
            lines.append(" ".join(parts))
    if found["mean_kernel_error"] is not None:
        lines.append(f"mean kernel error {100 * found['mean_kernel_error']:.1f}%")
    if "mean_psnr_recovered" in found:
        lines.append(
            f"mean PSNR of the poisoned images vs clean: {found['mean_psnr_poisoned']:.2f} dB poisoned, "
            f"{found['mean_psnr_recovered']:.2f} dB recovered"
        )
    return lines
