"""The GPU paths, emulated on the CPU where possible: checkpoints restored from CPU byte tensors, step
hooks that keep float32 batches under bf16 autocast, the process group's backends and timeout, and
the GPU each torchrun process takes. Tests named *_on_cuda need a CUDA device (bench/gpu_check.sh)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import crash_after_first_checkpoint
from test_train import blobs, quick_config, tiny_net
from unlearnable import distributed
from unlearnable.defenses import DeconvolutionAT, UEraserMax
from unlearnable.defenses.adversarial import AdversarialTraining, eval_mode
from unlearnable.defenses.hooks import AutocastModel
from unlearnable.distributed import World
from unlearnable.errors import UserInputError
from unlearnable.training.config import resolve_config
from unlearnable.training.recipes import resolve_recipe
from unlearnable.training.trainer import Trainer, train

pytestmark = pytest.mark.usefixtures("one_thread")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def data():
    return blobs(128, seed=0), blobs(64, seed=1)


def batch(n: int = 8, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Float images in [0, 1] whose values are mostly not representable in bf16, and labels of 4 classes."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g), torch.arange(n) % 4


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 4))


def bf16_rounded_share(x: torch.Tensor) -> float:
    """The share of values of `x` that bf16 holds exactly (about 1/256 for float32 arithmetic on random data)."""
    return (x.to(torch.bfloat16).float() == x).float().mean().item()


# --- resume: the checkpoint is read onto the CPU, RNG states set from CPU byte tensors ----------

def test_resume_loads_the_checkpoint_onto_the_cpu(tmp_path: Path, data, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    crash_after_first_checkpoint(monkeypatch, lambda: train(quick_config(out), *data, model=tiny_net(),
                                                            progress=False))
    real_load, calls = torch.load, []

    def recording_load(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    train(quick_config(out), *data, model=tiny_net(), resume=True, progress=False)
    resume_loads = [kwargs for kwargs in calls if not kwargs.get("mmap")]
    assert resume_loads == [{"map_location": "cpu", "weights_only": True}]


def test_rng_states_reach_the_setters_as_cpu_bytes(tmp_path: Path, data, monkeypatch: pytest.MonkeyPatch) -> None:
    """A trainer on a (pretend) GPU gets its generator and CUDA states as CPU uint8 tensors, whatever
    dtype the checkpoint held them in; the restored CPU generator continues the saved stream."""
    config = resolve_config(quick_config(tmp_path))
    trainer = Trainer(config, *data, tiny_net(), None)
    saved = trainer.state_dict()
    expected = torch.rand(4, generator=trainer.generator)
    state = {**saved, "generator": saved["generator"].to(torch.int32), "cuda_rng": saved["torch_rng"].to(torch.int64)}
    trainer.load_state_dict(state)
    assert torch.equal(torch.rand(4, generator=trainer.generator), expected)

    received = []

    class RecordingGenerator:
        def set_state(self, value: torch.Tensor) -> None:
            received.append(("generator", value.device.type, value.dtype))

    monkeypatch.setattr(torch.cuda, "set_rng_state",
                        lambda value, device=None: received.append(("cuda", value.device.type, value.dtype)))
    trainer.generator, trainer.device = RecordingGenerator(), torch.device("cuda", 0)
    trainer.load_state_dict(state)
    assert received == [("generator", "cpu", torch.uint8), ("cuda", "cpu", torch.uint8)]


# --- step hooks under bf16 autocast: only the model's forward is cast --------------------------

def test_dat_batch_is_float32_and_not_bf16_rounded_under_autocast() -> None:
    x, labels = batch()
    model = small_model()
    without_ascent = DeconvolutionAT(steps=0)  # filters straight from the generator: same arithmetic either way
    plain = without_ascent(model, x, labels, torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = without_ascent(model, x, labels, torch.Generator().manual_seed(1))
    assert cast.dtype == torch.float32 and torch.equal(cast, plain)
    assert bf16_rounded_share(plain) < 0.05
    hook = DeconvolutionAT(steps=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ascended = hook(model, x, labels, torch.Generator().manual_seed(1))
    assert ascended.dtype == torch.float32 and bf16_rounded_share(ascended) < 0.05
    assert ascended.min() == 0 and ascended.max() == 1  # rescaled per image


def test_dat_with_an_autocast_model_matches_in_float32_where_the_model_is_not_involved() -> None:
    x, labels = batch(seed=2)
    model = small_model()
    hook = DeconvolutionAT(steps=0)
    plain = hook(model, x, labels, torch.Generator().manual_seed(3))
    cast = hook(AutocastModel(model, "cpu"), x, labels, torch.Generator().manual_seed(3))
    assert torch.equal(plain, cast)


def test_ueraser_draws_are_float32_under_autocast() -> None:
    x, labels = batch(seed=4)
    model = small_model()
    one_draw = UEraserMax(draws=1)  # the model only scores: one draw is the same batch either way
    plain = one_draw(model, x, labels, torch.Generator().manual_seed(5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = one_draw(model, x, labels, torch.Generator().manual_seed(5))
    assert cast.dtype == torch.float32 and torch.equal(cast, plain)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        worst = UEraserMax(draws=3)(model, x, labels, torch.Generator().manual_seed(5))
    assert worst.dtype == torch.float32 and bf16_rounded_share(worst) < 0.5  # (some ops give exact k/255 levels)


def test_pgd_batch_is_float32_under_autocast() -> None:
    x, labels = batch(seed=6)
    hook = AdversarialTraining("linf", 4 / 255, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        adversarial = hook(AutocastModel(small_model(), "cpu"), x, labels, torch.Generator().manual_seed(7))
    assert adversarial.dtype == torch.float32 and bf16_rounded_share(adversarial) < 0.05
    assert (adversarial - x).abs().max() <= 4 / 255 + 1e-7


def test_autocast_model_casts_the_forward_and_follows_train_eval() -> None:
    model = small_model()
    wrapped = AutocastModel(model, "cpu")
    x, _ = batch(2)
    assert wrapped(x).dtype == torch.bfloat16 and AutocastModel(model, "cpu", enabled=False)(x).dtype == torch.float32
    with eval_mode(wrapped):
        assert not model.training and not wrapped.training
    assert model.training and wrapped.training
    model.eval()
    with eval_mode(wrapped):
        pass
    assert not model.training  # restored to what it was
    assert list(wrapped.parameters()) == list(model.parameters())


@pytest.mark.parametrize("defense", ["dat", "ueraser", "at-linf"])
def test_trainer_with_amp_updates_on_float32_hook_batches(tmp_path: Path, data, defense: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """CPU bf16 AMP through the trainer: the batch the hook returns reaches the update unrounded."""
    options = {"steps": 1} if defense in ("dat", "at-linf") else {"draws": 2}
    config = resolve_config(quick_config(tmp_path, amp=True, defense=defense, defense_options=options,
                                         recipe=resolve_recipe("quick", epochs=1, batch_size=32), normalization="data"))
    trainer = Trainer(config, *data, tiny_net(), None)
    seen = []
    real_update = trainer.update

    def recording_update(inputs: torch.Tensor, targets: torch.Tensor):
        seen.append(inputs.detach().clone())
        return real_update(inputs, targets)

    monkeypatch.setattr(trainer, "update", recording_update)
    images, labels = next(trainer.train_loader.shuffled(trainer.generator))
    trainer.model.train()
    trainer.train_step(images, labels)
    assert seen[0].dtype == torch.float32 and bf16_rounded_share(seen[0]) < 0.5


# --- torch.distributed: backends per device type, timeout, one GPU per process ----------------

def test_default_backend_is_per_device_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert distributed.default_backend() == "cpu:gloo,cuda:nccl"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed.default_backend() == "gloo"


def test_init_joins_with_a_long_timeout_and_the_local_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    joined, devices = [], []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29999")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", devices.append)
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: bool(joined))
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend, timeout: joined.append((backend, timeout)))
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: 1)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 2)
    world = distributed.init()
    assert joined == [("cpu:gloo,cuda:nccl", timedelta(hours=2))] and devices == [1]
    assert world == World(1, 2, 1)
    # More processes than GPUs (e.g. --device cpu on a one-GPU machine): no GPU is chosen.
    joined.clear()
    devices.clear()
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    distributed.init()
    assert devices == [] and joined[0][0] == "cpu:gloo,cuda:nccl"


def test_small_collectives_go_over_gloo_when_the_group_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(distributed.dist, "get_backend", lambda: "cpu:gloo,cuda:nccl")
    assert distributed._collective_device() == torch.device("cpu")
    monkeypatch.setattr(distributed.dist, "get_backend", lambda: "gloo")
    assert distributed._collective_device() == torch.device("cpu")


def test_each_torchrun_process_takes_the_gpu_of_its_local_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(distributed, "all_agree", lambda world, ok: ok)  # one process stands for all
    second = World(rank=1, size=2, local_rank=1)
    assert distributed.training_device(second, None) == "cuda:1"
    assert distributed.training_device(second, "cuda") == "cuda:1"
    assert distributed.training_device(second, "cuda:1") == "cuda:1"
    assert distributed.training_device(second, "cpu") == "cpu"
    assert distributed.training_device(World(), "cuda:0") == "cuda:0"  # one process: as asked
    with pytest.raises(UserInputError, match=r"^--device cuda:0 under torchrun would put several processes on one "
                                             r"GPU.*pass --device cuda"):
        distributed.training_device(second, "cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed.training_device(second, None) is None


def test_a_refused_index_is_refused_on_every_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rank 0 asks for cuda:0, which is its own GPU, but rank 1 disagrees: rank 0 refuses too."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(distributed, "all_agree", lambda world, ok: False)
    with pytest.raises(UserInputError, match="several processes on one GPU"):
        distributed.training_device(World(rank=0, size=2, local_rank=0), "cuda:0")


# --- on a GPU (bench/gpu_check.sh runs these) -------------------------------------------------

@needs_cuda
def test_resume_is_exact_in_its_restored_state_on_cuda(tmp_path: Path, data, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    config = quick_config(out, device="cuda", defense="rsk+ff")
    crash_after_first_checkpoint(monkeypatch, lambda: train(config, *data, model=tiny_net(), progress=False))
    resumed = train(config, *data, model=tiny_net(), resume=True, progress=False)
    assert [record["epoch"] for record in resumed["epochs"]] == [1, 2] and resumed["status"] == "complete"
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    trainer = Trainer(resolve_config(config), *data, tiny_net().cuda(), None)
    trainer.load_state_dict(state)
    assert torch.equal(trainer.generator.get_state(), state["generator"])
    assert torch.equal(torch.cuda.get_rng_state(trainer.device), state["cuda_rng"])


@needs_cuda
@pytest.mark.parametrize("hook", [DeconvolutionAT(steps=2), UEraserMax(draws=2)])
def test_hook_batches_stay_float32_on_cuda(hook) -> None:
    x, labels = batch(16, 32)
    model = small_model().cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = hook(model, x.cuda(), labels.cuda(), torch.Generator("cuda").manual_seed(0))
    assert out.dtype == torch.float32 and bf16_rounded_share(out.cpu()) < 0.5


@needs_cuda
def test_amp_training_step_on_cuda(tmp_path: Path, data) -> None:
    config = quick_config(tmp_path, device="cuda", defense="dat", defense_options={"steps": 1},
                          recipe=resolve_recipe("quick", epochs=1, batch_size=32))
    results = train(config, *data, model=tiny_net(), progress=False)
    assert results["config"]["amp"] is True and results["host"]["cudnn"] and results["status"] == "complete"
