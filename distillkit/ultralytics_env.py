"""Import ultralytics offline and guarded: always import it through ``import_ultralytics()``.

The offline part (no DNS probe, no hub, no pip installs, local fonts, integrations off) is
``distillkit.ultralytics_offline``. On top of it, ultralytics' checkpoint loader is routed through
``distillkit.safe_load`` (model files are data, not code), and its checkpoint writer through
``distillkit.ultralytics_checkpoints`` (atomic files).
"""

from __future__ import annotations

from functools import cache
from types import ModuleType

from distillkit.ultralytics_offline import (
    configure_offline_environment,
    distillkit_cache_dir,
    import_ultralytics_offline,
)

__all__ = ["configure_offline_environment", "distillkit_cache_dir", "import_ultralytics"]


@cache
def import_ultralytics() -> ModuleType:
    """The ``ultralytics`` module, configured to never touch the network, its loader and writer guarded."""
    ultralytics = import_ultralytics_offline()
    from distillkit.safe_load import install_ultralytics_guard

    install_ultralytics_guard()  # checkpoints are read under distillkit's allowlist, never as code
    from distillkit.ultralytics_checkpoints import install_atomic_checkpoints

    install_atomic_checkpoints()  # a kill at any instant leaves a complete last.pt / best.pt
    return ultralytics
