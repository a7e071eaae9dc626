"""The contract every defense shares: declared parameters, and for image defenses the transform protocol.

`Configurable` gives a class a constructor check and a repr from one declaration, as scikit-learn
estimators do: the class lists ``PARAMETER_CONSTRAINTS`` (``unlearnable.params`` constraints), the
constructor calls ``self._validate(name=value, ...)``, and the repr is built from the constructor's
signature and the attributes of the same names (``RandomSharpen(center=2.5, std=0.1, padding='valid')``).
A bad value raises one UserInputError line: "RandomSharpen: std must be a number ≥ 0 (got -1)".

`Transform` is an image defense in the style of ``torchvision.transforms.v2``: random parameters
are drawn by `Transform.make_params` and applied by `Transform.transform`; calling the defense does
both. The call takes

- a float B×C×H×W batch in [0, 1] on any device (the trainer's batched path), or
- one float C×H×W image in [0, 1], handled as a batch of one and returned as C×H×W (per-sample use
  inside ``torchvision.transforms.v2.Compose`` after ``ToImage()`` and
  ``ToDtype(torch.float32, scale=True)``),

and an optional ``generator``: a ``torch.Generator`` on the input's device, or None for torch's
global generator there (``torch.default_generator`` on the CPU, the device's default generator on
CUDA), so ``torch.manual_seed`` makes per-sample pipelines reproducible. `resolve_generator` is the
one place that checks a generator against a device; the step hooks and mixing defenses use it too.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from unlearnable.errors import UserInputError
from unlearnable.params import Constraint, validate_params

__all__ = ["Configurable", "Transform", "resolve_generator"]


class Configurable:
    """Declared, validated constructor parameters and a repr generated from them.

    A subclass sets ``PARAMETER_CONSTRAINTS`` (parameter name → constraint), calls
    ``self._validate(...)`` with the values given to its constructor, and stores each parameter
    under an attribute of the same name. A parameter stored under no such attribute (Coin's
    `severity`, which only sets `alpha`) is left out of `get_params` and the repr.
    """

    PARAMETER_CONSTRAINTS: ClassVar[Mapping[str, Constraint]] = {}

    def _validate(self, **values: Any) -> None:
        """One UserInputError line, "Class: name must be … (got …)", for the first value that breaks its constraint."""
        validate_params(self, values)

    @classmethod
    def _parameter_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return [
            name
            for name, parameter in signature.parameters.items()
            if name != "self" and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
        ]

    def get_params(self) -> dict[str, Any]:
        """The constructor parameters as stored (after defaults and conversions), in signature order."""
        return {name: getattr(self, name) for name in self._parameter_names() if hasattr(self, name)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"


def _default_generator(device: torch.device) -> torch.Generator:
    if device.type == "cpu":
        return torch.default_generator
    if device.type == "cuda":
        return torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]
    raise UserInputError(
        f"no default generator for a tensor on {device}; pass generator=torch.Generator({str(device)!r})"
    )


def resolve_generator(generator: torch.Generator | None, device: torch.device, owner: str) -> torch.Generator:
    """The generator a random defense draws from for a tensor on `device`.

    None means torch's global generator of that device; a given generator must be a
    ``torch.Generator`` living on `device` (a CUDA batch needs ``torch.Generator("cuda")``).
    Anything else raises a one-line UserInputError naming `owner`.
    """
    if generator is None:
        return _default_generator(device)
    if not isinstance(generator, torch.Generator):
        raise UserInputError(f"{owner}: generator must be a torch.Generator or None (got {type(generator).__name__})")
    where = generator.device
    if where.type != device.type or (
        device.type != "cpu"
        and (where.index if where.index is not None else 0) != (device.index if device.index is not None else 0)
    ):
        raise UserInputError(
            f"{owner}: the generator is on {where} but the images are on {device}; "
            f"draw from torch.Generator({str(device)!r}) for them"
        )
    return generator


class Transform(Configurable):
    """An image defense (see the module docstring): ``defense(x, generator=None) -> Tensor``.

    Subclasses implement `transform` and, when random, `make_params` (and set ``random = True``);
    they keep the float dtype and the device of the input, and values in [0, 1].
    """

    random: ClassVar[bool] = False
    """True when `make_params` draws: only then is the generator resolved and checked."""

    def make_params(self, x: torch.Tensor, generator: torch.Generator | None) -> dict[str, Any]:
        """Draw the random parameters for float B×C×H×W `x` from `generator` (a random transform gets
        it resolved, on x's device); a deterministic transform draws nothing."""
        return {}

    def transform(self, x: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        """Apply the defense with `params` (from `make_params`) to the float B×C×H×W batch `x`."""
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The defended float B×C×H×W batch, or C×H×W image, `x` in [0, 1]; see the module docstring."""
        batch = self._as_batch(x)
        if self.random:
            generator = resolve_generator(generator, batch.device, type(self).__name__)
        out = self.transform(batch, self.make_params(batch, generator))
        return out[0] if batch is not x else out

    def _as_batch(self, x: Any) -> torch.Tensor:
        """`x` itself for a float B×C×H×W tensor, x[None] for a C×H×W one; anything else raises UserInputError."""
        name = type(self).__name__
        if not isinstance(x, torch.Tensor):
            raise UserInputError(
                f"{name} takes a float tensor in [0, 1] (got {type(x).__name__}); in a torchvision "
                "pipeline put it after v2.ToImage() and v2.ToDtype(torch.float32, scale=True)"
            )
        if not x.is_floating_point():
            raise UserInputError(
                f"{name} takes float images in [0, 1] (got {x.dtype}); convert with "
                "v2.ToDtype(torch.float32, scale=True), or x.float() / 255"
            )
        if x.dim() == 3:
            return x[None]
        if x.dim() != 4:
            raise UserInputError(f"{name} takes a B×C×H×W batch or one C×H×W image (got shape {tuple(x.shape)})")
        return x
