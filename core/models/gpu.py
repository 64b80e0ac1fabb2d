"""`@gpu`: run a function on a ZeroGPU slice on Hugging Face Spaces, unchanged anywhere else.

On a ZeroGPU Space, CUDA exists only inside functions decorated with `spaces.GPU`; the `spaces`
package is installed there (and nowhere else by default). Elsewhere this is a no-op, so the same
code runs on a laptop, a GPU server or a CPU Space.

    @gpu                      # default time slice
    def caption_batch(...): ...

    @gpu(duration=300)        # long jobs ask for more
    def train_step(...): ...
"""
from __future__ import annotations

from typing import Callable

try:
    import spaces as _spaces
except Exception:            # not installed, or installed but unusable off Spaces
    _spaces = None


def available() -> bool:
    """Whether `spaces.GPU` is in use (ZeroGPU-capable environment)."""
    return _spaces is not None


def gpu(fn: Callable | None = None, **options):
    """`spaces.GPU` when the package is importable, else return the function untouched."""
    if _spaces is None:
        return fn if fn is not None else (lambda f: f)
    return _spaces.GPU(fn, **options) if fn is not None else _spaces.GPU(**options)
