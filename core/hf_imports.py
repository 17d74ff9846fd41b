"""transformers' names, imported one thread at a time.

    AutoConfig, AutoTokenizer = transformers_names("AutoConfig", "AutoTokenizer")
    mapping = imported_name("transformers.models.auto.modeling_auto", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES")

transformers resolves its top-level names lazily: its _LazyModule imports the submodule that
defines a name at the name's first use. Two threads doing that for the first time at once can
each hold an import lock the other needs; Python breaks such a cycle by handing one of them a
partly initialised module, and `from transformers import get_scheduler` then fails with
"cannot import name 'get_scheduler'" (seen in the app: the wizard's learning-rate preview on
the GUI thread while the model page described a model in a background job, every first
"New run…"). One process-wide lock around these imports serialises them; after the first, a
name is a dict lookup. peft and lm-eval import transformers' submodules, so a function that
imports any of them (a GUI job may run it) does so here too (imported_name; test_architecture
finds any other). The worker imports at module level (one thread) and needs none of this.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from typing import Any

_LOCK = threading.RLock()
WAIT_SECONDS = 60.0
"""How long a thread waits for another's import before going on without the lock. Python's
import-deadlock detection cannot see a lock of ours: a thread holding a module's import lock
while it asks for ours, and the lock's holder waiting for that module, would wait forever;
after this long the waiter goes on (at worst the race above, never a hang)."""


@contextlib.contextmanager
def _locked():
    locked = _LOCK.acquire(timeout=WAIT_SECONDS)
    try:
        yield
    finally:
        if locked:
            _LOCK.release()


def transformers_names(*names: str) -> tuple[Any, ...]:
    """The named attributes of the transformers package (classes, functions), imported under
    the lock. AttributeError for a name transformers does not have."""
    with _locked():
        import transformers

        return tuple(getattr(transformers, name) for name in names)


def imported_name(module: str, name: str) -> Any:
    """`name` of the module `module` (a dotted path: a transformers submodule, peft, lm_eval),
    imported under the same lock: a submodule's import races the lazy top-level names just the
    same (seen: the model page's scan of cached models importing modeling_auto while the
    schedule page drew its learning rates, the first "New run..." with an imported model in the
    data folder failed)."""
    with _locked():
        return getattr(importlib.import_module(module), name)
