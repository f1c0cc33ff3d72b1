"""Device names: an accelerator asked for but absent is one clear error."""

import pytest
import torch

from polytask.train._device import resolve_device


@pytest.mark.parametrize(("name", "backend"), [("cuda", "CUDA"), ("mps", "MPS")])
def test_an_absent_accelerator_is_named(name, backend):
    available = torch.cuda.is_available() if name == "cuda" else torch.backends.mps.is_available()
    if available:
        pytest.skip(f"{name} is available here")
    with pytest.raises(ValueError, match=f"device '{name}' was asked for but {backend}"):
        resolve_device(name)
    assert resolve_device("cpu") == torch.device("cpu")
