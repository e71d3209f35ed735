"""Start-up hook that activates `transformers.heterogeneity` when Transformers is first used.

`transformers_heterogeneity.pth` runs `install()` in every interpreter. It must cost nothing in processes that never
use Transformers, so it imports neither torch nor transformers, nor anything of `transformers.heterogeneity`: it puts
one finder on `sys.meta_path` that sees every `transformers` module being imported and knows when each has finished
executing. Once `transformers.configuration_utils` has (it is imported before any config or model exists), or the
model manager of `transformers serve` (which builds its server before it loads any model), it imports
`transformers.heterogeneity`, which activates the feature. Set `TRANSFORMERS_HETEROGENEITY_AUTO_ACTIVATE=0` to turn
the automatic activation off; `import transformers.heterogeneity` still activates it explicitly.

The activation patches upstream modules through `after_import`, which never hands a callback a module that is still
executing: Transformers' modules import each other mid-way (`modeling_utils` imports `configuration_utils` long before
it defines `PreTrainedModel`), so a module present in `sys.modules` may be half made. Callbacks run right after the
module executes, while the import system still holds that module's lock, so no thread can use the module before its
callbacks are done. For the same reason a callback must not import modules that may still be executing in another
thread (that would wait for their locks while holding one): callbacks patch, and import what they call into lazily.

Upstreaming removes this module: upstream would call the heterogeneity hooks directly.
"""

import importlib
import os
import sys
import threading


ENV_VARIABLE = "TRANSFORMERS_HETEROGENEITY_AUTO_ACTIVATE"
# `transformers serve` makes its model manager, whose loading the activation patches, before any config exists.
TRIGGER_MODULES = ("transformers.configuration_utils", "transformers.cli.serving.model_manager")
PACKAGE = "transformers.heterogeneity"

_lock = threading.RLock()
# Module name -> callbacks waiting for that module to finish executing.
_waiting: dict[str, list] = {}
# Names of the modules that a `_TrackingLoader` is executing, in any thread.
_executing: set[str] = set()


def auto_activation_enabled() -> bool:
    """Whether the environment allows automatic activation (anything but 0/false/no/off)."""
    return os.environ.get(ENV_VARIABLE, "1").strip().lower() not in ("0", "false", "no", "off")


def _is_tracked(name: str) -> bool:
    return name == "transformers" or name.startswith("transformers.")


class _TrackingLoader:
    """Runs a module's real loader, then the callbacks waiting for that module."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):
        # `get_source`, `get_filename`, `is_package`, `get_resource_reader`, ...: tracebacks, `inspect` and
        # `importlib.resources` keep working.
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        name = module.__name__
        with _lock:
            _executing.add(name)
        try:
            self._loader.exec_module(module)
        finally:
            with _lock:
                _executing.discard(name)
        # Only a module that executed completely gets its callbacks; after a failed import they wait for a retry.
        with _lock:
            callbacks = _waiting.pop(name, [])
        for callback in callbacks:
            callback(module)


class _TrackingFinder:
    """Finds nothing itself: asks the finders after it for `transformers` modules and wraps their loaders.

    Duck-typed (no `importlib.abc` base classes), so that installing it imports nothing at start-up.
    """

    def find_spec(self, fullname, path, target=None):
        if not _is_tracked(fullname):
            return None
        finders = sys.meta_path
        start = finders.index(self) + 1 if self in finders else len(finders)
        for finder in finders[start:]:
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(fullname, path, target) if find_spec is not None else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _TrackingLoader(spec.loader)
                return spec
        return None


_FINDER = _TrackingFinder()


def _install_finder() -> None:
    with _lock:
        if _FINDER not in sys.meta_path:
            sys.meta_path.insert(0, _FINDER)


def _is_complete(module) -> bool:
    """Whether `module` has finished executing.

    Raises:
        RuntimeError: `module` is executing under a loader that this hook did not wrap (it was imported before the
            hook was installed), so its end cannot be seen.
    """
    if module.__name__ in _executing:
        return False
    spec = getattr(module, "__spec__", None)
    if not getattr(spec, "_initializing", False) or isinstance(getattr(spec, "loader", None), _TrackingLoader):
        # `_initializing` stays set until the import system returns, after the loader (and its callbacks) are done.
        return True
    raise RuntimeError(
        f"{PACKAGE} was activated while `{module.__name__}` was still being imported, before the start-up hook "
        f"`transformers_heterogeneity.pth` was installed (is the package installed in a site-packages directory?). "
        f"Import {PACKAGE} once that import has finished."
    )


def after_import(name: str, callback) -> None:
    """Calls `callback(module)` once module `name` has executed completely: at once if it has, else right after it
    executes. Each call registers one run."""
    if not _is_tracked(name):
        raise ValueError(f"after_import only watches `transformers` modules, not {name!r}")
    _install_finder()
    with _lock:
        module = sys.modules.get(name)
        if module is None or not _is_complete(module):
            _waiting.setdefault(name, []).append(callback)
            return
    callback(module)


def forget(callback) -> None:
    """Stops calling `callback` for modules imported from now on."""
    with _lock:
        for name, callbacks in list(_waiting.items()):
            callbacks[:] = [waiting for waiting in callbacks if waiting is not callback]
            if not callbacks:
                del _waiting[name]


def _activate(module) -> None:
    importlib.import_module(PACKAGE)  # importing it activates the feature


def install() -> None:
    """Starts watching Transformers' imports and, unless the environment turns it off, arranges the activation."""
    _install_finder()
    if auto_activation_enabled():
        with _lock:
            if any(_activate in callbacks for callbacks in _waiting.values()):
                return
        for trigger in TRIGGER_MODULES:
            after_import(trigger, _activate)
