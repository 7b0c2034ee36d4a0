"""`--cuda` on a GPU: every script's networks and update live there, a run writes what a CPU run
writes, and the same seed gives the same run twice. Skipped where torch sees no CUDA device, so
`python -m pytest` passes on a CPU-only machine and runs these on a GPU one."""

import warnings

import pytest
import torch
import torch.nn as nn

from tests.helpers import cli_flags, load_script, read_progress, read_summary, run_cli, runs_of_seeds, spy, train_in
from tests.scripts import IDS, SCRIPTS

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def record_optimizer_steps(monkeypatch) -> list[set[str]]:
    """Every optimizer step a run takes records the devices of the parameters it moves and of their gradients.

    The nine scripts update through Adam (a2c through RMSprop by default; TRPO only its critic: its actor's
    natural-gradient step is covered by the test's check that every network lives on the GPU).
    """
    devices = []
    for cls in (torch.optim.Adam, torch.optim.RMSprop):

        def step(self, *args, _original=cls.step, **kwargs):
            params = [p for group in self.param_groups for p in group["params"]]
            devices.append({p.device.type for p in params} | {p.grad.device.type for p in params if p.grad is not None})
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "step", step)
    return devices


@pytest.mark.parametrize("spec", SCRIPTS, ids=IDS)
def test_the_networks_and_the_update_are_on_the_gpu(spec, tmp_path, monkeypatch):
    module = load_script(spec.name)
    steps = record_optimizer_steps(monkeypatch)
    saved = spy(monkeypatch, module, "state_of")  # the NaN guard and the checkpoint read every part through it
    summary, _ = train_in(tmp_path, module, env_id=spec.envs[0], seed=1, cuda=True, save_model=True, **spec.tiny)
    assert summary["global_step"] > 0
    assert steps, f"{spec.name} took no optimizer step"
    assert all(devices == {"cuda"} for devices in steps), f"{spec.name}: an update ran on {steps}"
    # Every network (and finite_diff's theta) is on the GPU; statistics kept as numpy arrays are not networks.
    parts = {id(args[0]): args[0] for args, _, _ in saved}.values()
    tensors = [t for part in parts if isinstance(part, nn.Module) for t in part.state_dict().values()]
    tensors += [part for part in parts if isinstance(part, torch.Tensor)]
    assert tensors and all(t.device.type == "cuda" for t in tensors), {t.device.type for t in tensors}


@pytest.mark.parametrize("spec", SCRIPTS, ids=IDS)
def test_a_cuda_run_writes_what_a_cpu_run_writes_and_its_model_loads_on_the_cpu(spec, tmp_path):
    folders = {}
    for cuda in (True, False):
        cwd = tmp_path / str(cuda)
        cwd.mkdir()
        flags = cli_flags(env_id=spec.envs[0], seed=2, cuda=cuda, save_model=True, **spec.tiny)
        result = run_cli(spec.name, *flags, cwd=cwd)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "warning" not in result.stderr
        (folders[cuda],) = (cwd / "runs").iterdir()
    assert sorted(p.name for p in folders[True].iterdir()) == sorted(p.name for p in folders[False].iterdir())
    assert read_summary(folders[True]).keys() == read_summary(folders[False]).keys()
    assert read_progress(folders[True]), "the cuda run recorded no episode"
    # The GPU's checkpoint evaluated on the CPU, and the CPU's on the GPU.
    for saved_on, cuda in ((True, False), (False, True)):
        (model,) = folders[saved_on].glob("*.pt")
        flags = cli_flags(env_id=spec.envs[0], cuda=cuda, model_path=str(model), **{**spec.tiny, "total_timesteps": 0})
        result = run_cli(spec.name, *flags, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.strip().splitlines()[-1].startswith("eval: mean_return=")


@pytest.mark.parametrize("spec", SCRIPTS, ids=IDS)
def test_same_seed_same_run_on_the_gpu(spec, tmp_path):
    runs = runs_of_seeds(tmp_path, load_script(spec.name), [5, 5, 6], env_id=spec.envs[0], cuda=True, **spec.tiny)
    assert runs[0] == runs[1]
    assert runs[0] != runs[2], "a different seed gave the same run: is the seed used?"


@pytest.mark.parametrize("spec", SCRIPTS, ids=IDS)
def test_no_op_of_a_run_is_one_torch_lists_as_nondeterministic_on_the_gpu(spec, tmp_path, monkeypatch):
    """torch warns at each op it knows to be nondeterministic on CUDA (e.g. `torch.histc`): none may run."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    module = load_script(spec.name)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train_in(tmp_path, module, env_id=spec.envs[0], seed=1, cuda=True, **spec.tiny)
    finally:
        torch.use_deterministic_algorithms(False)
    messages = sorted({str(w.message).splitlines()[0] for w in caught if "deterministic" in str(w.message)})
    assert not messages, messages
