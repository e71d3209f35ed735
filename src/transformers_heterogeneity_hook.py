"""Start-up hook that activates `transformers.heterogeneity` when Transformers is first used.

`transformers_heterogeneity.pth` runs `install()` in every interpreter. It must cost nothing in processes that never
use Transformers, so it imports neither torch nor transformers: it only puts a finder on `sys.meta_path` that waits
for `transformers.configuration_utils` (imported before any config or model exists) and, once that module has
executed, imports `transformers.heterogeneity`, which activates the feature. Set
`TRANSFORMERS_HETEROGENEITY_AUTO_ACTIVATE=0` to turn the automatic activation off; `import transformers.heterogeneity`
still activates it explicitly.

`after_import` is also how the activation defers each patch until the upstream module it patches is imported, so
that activating costs no import of its own. Upstreaming removes this module: upstream would call the heterogeneity
hooks directly.
"""

import os
import sys
import threading
from importlib.machinery import PathFinder


ENV_VARIABLE = "TRANSFORMERS_HETEROGENEITY_AUTO_ACTIVATE"
TRIGGER_MODULE = "transformers.configuration_utils"
# Modules that import the trigger module before they are complete, and import each other (`LlamaConfig`'s docstring
# decorator reads `modeling_auto`); the configs of the checkpoint families need all of them (`CONFIG_DEPENDENCIES`
# in `transformers.heterogeneity.models`). Their loaders are wrapped from the start, so that callbacks registered while
# they execute (the activation registers configs with `AutoConfig`) run once they are complete.
WATCHED_MODULES = (
    "transformers.models.auto.configuration_auto",
    "transformers.models.auto.modeling_auto",
    "transformers.models.llama.configuration_llama",
    "transformers.models.nemotron_h.configuration_nemotron_h",
    "transformers.models.gpt_oss.configuration_gpt_oss",
)

_lock = threading.RLock()
# (predicate on a module name, callback receiving the executed module)
_pending: list[tuple[object, object]] = []
# Names of the modules that a `_CallbackLoader` is executing.
_executing: set[str] = set()


def auto_activation_enabled() -> bool:
    """Whether the environment allows automatic activation (anything but 0/false/no/off)."""
    return os.environ.get(ENV_VARIABLE, "1").strip().lower() not in ("0", "false", "no", "off")


class _CallbackLoader:
    """Runs a module's real loader, then the callbacks waiting for that module (including those registered while it
    executed)."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):
        # `get_source`, `get_filename`, `is_package`, ...: tracebacks and `inspect` keep working.
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        with _lock:
            _executing.add(module.__name__)
        try:
            self._loader.exec_module(module)
        finally:
            with _lock:
                _executing.discard(module.__name__)
        for callback in _callbacks_for(module.__name__):
            callback(module)


def _callbacks_for(name):
    with _lock:
        return [callback for matches, callback in _pending if matches(name)]


class _AfterImportFinder:
    """Finds nothing itself; wraps the loader of the modules that callbacks wait for.

    Duck-typed (no `importlib.abc` base classes), so that installing it imports nothing at start-up.
    """

    def find_spec(self, fullname, path, target=None):
        if fullname not in WATCHED_MODULES and not _callbacks_for(fullname):
            return None
        spec = PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _CallbackLoader(spec.loader)
        return spec


_FINDER = _AfterImportFinder()


def after_import(matches, callback) -> None:
    """Calls `callback(module)` for every module whose name satisfies `matches(name)`: at once for those already
    imported, and right after the others execute."""
    with _lock:
        _pending.append((matches, callback))
        if _FINDER not in sys.meta_path:
            sys.meta_path.insert(0, _FINDER)
        imported = [
            module
            for name, module in list(sys.modules.items())
            if module is not None and matches(name) and not _runs_callbacks_when_complete(module)
        ]
    for module in imported:
        callback(module)


def _runs_callbacks_when_complete(module):
    """Whether `module` is still executing under a `_CallbackLoader`, which calls the callbacks once it is done."""
    return module.__name__ in _executing


def forget(callback) -> None:
    """Stops calling `callback` for modules imported from now on."""
    with _lock:
        _pending[:] = [(matches, waiting) for matches, waiting in _pending if waiting is not callback]


def _activate(module) -> None:
    forget(_activate)
    import transformers.heterogeneity  # noqa: F401  (importing it activates the feature)


def install() -> None:
    """Arranges the activation once, unless the environment turns automatic activation off."""
    if auto_activation_enabled():
        with _lock:
            if any(callback is _activate for _, callback in _pending):
                return
        after_import(TRIGGER_MODULE.__eq__, _activate)
