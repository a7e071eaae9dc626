"""The log power spectrum of images: one definition for the report's spectra, detection and deconvolution.

    log_power_spectrum(x, eps) = log(|FFT₂(x)|² + eps)

over the last two dimensions (H×W) of any N×…×H×W tensor. `eps` is explicit because the callers
need different floors: it keeps log(0) finite where a frequency has no power at all (a constant
image away from DC, the rows an all-zero border leaves), and it sets the lowest value a spectrum
can show, so it should sit well below the smallest power that matters for the images' scale
(pixel values in [0, 1]: 1e-8 floors at −18.4; in 0..255 a larger floor, e.g. 1e-3, is as far
below the signal). Windowing, mean removal and averaging over images or channels are the
caller's: this is only the transform.
"""

from __future__ import annotations

import torch


def log_power_spectrum(
    images: torch.Tensor, eps: float, *, onesided: bool = False, centred: bool = False
) -> torch.Tensor:
    """log(|F|² + eps), F the 2-D discrete Fourier transform of `images` over their last two dimensions.

    Args:
        images: real float tensor …×H×W (any leading dimensions, any device).
        eps: added to the power before the log (> 0): the floor of the spectrum (see the module docstring).
        onesided: the ``torch.fft.rfft2`` half spectrum, …×H×(W//2 + 1), instead of the full …×H×W.
        centred: zero frequency in the middle (``fftshift`` over the two dimensions), as spectra are drawn;
            only for the full spectrum.

    Returns:
        a real tensor of the images' floating dtype, on their device.
    """
    if eps <= 0:
        raise ValueError(f"eps must be > 0 (got {eps!r})")
    if onesided and centred:
        raise ValueError("a one-sided spectrum cannot be centred")
    spectrum = torch.fft.rfft2(images) if onesided else torch.fft.fft2(images)
    if centred:
        spectrum = torch.fft.fftshift(spectrum, dim=(-2, -1))
    return torch.log(spectrum.abs().square() + eps)
