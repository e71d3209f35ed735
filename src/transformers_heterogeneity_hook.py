"""Start-up hook that activates `transformers.heterogeneity` when Transformers' modeling code is first imported.

`transformers_heterogeneity.pth` runs `install()` in every interpreter. It must cost nothing in processes that never
use Transformers, so it imports neither torch nor transformers: it only puts a finder on `sys.meta_path` that waits
for `transformers.modeling_utils` and, once that module has executed, imports `transformers.heterogeneity`, which
activates the feature. Set `TRANSFORMERS_HETEROGENEITY_AUTO_ACTIVATE=0` to turn the automatic activation off;
`import transformers.heterogeneity` still activates it explicitly.

Upstreaming removes this module: `modeling_utils` would call the heterogeneity hooks directly.
"""

import os
import sys
from importlib.abc import Loader, MetaPathFinder
from importlib.machinery import PathFinder


ENV_VARIABLE = "TRANSFORMERS_HETEROGENEITY_AUTO_ACTIVATE"
TRIGGER_MODULE = "transformers.modeling_utils"


def auto_activation_enabled() -> bool:
    """Whether the environment allows automatic activation (anything but 0/false/no/off)."""
    return os.environ.get(ENV_VARIABLE, "1").strip().lower() not in ("0", "false", "no", "off")


class _ActivatingLoader(Loader):
    """Runs the real loader of `transformers.modeling_utils`, then activates the heterogeneity feature."""

    def __init__(self, loader: Loader):
        self._loader = loader

    def __getattr__(self, name):
        # `get_source`, `get_filename`, `is_package`, ...: tracebacks and `inspect` keep working.
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        import transformers.heterogeneity  # noqa: F401  (importing it activates the feature)


class _TransformersModelingFinder(MetaPathFinder):
    """Finds nothing itself; only wraps the loader of `transformers.modeling_utils` when that module is imported."""

    def find_spec(self, fullname, path, target=None):
        if fullname != TRIGGER_MODULE:
            return None
        uninstall()
        spec = PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _ActivatingLoader(spec.loader)
        return spec


_FINDER = _TransformersModelingFinder()


def install() -> None:
    """Installs the finder once, unless the environment turns automatic activation off."""
    if not auto_activation_enabled() or _FINDER in sys.meta_path:
        return
    if TRIGGER_MODULE in sys.modules:
        # Transformers was imported before this hook ran (e.g. `install()` called by hand): activate now.
        import transformers.heterogeneity  # noqa: F401

        return
    sys.meta_path.insert(0, _FINDER)


def uninstall() -> None:
    """Removes the finder; the trigger fires at most once per interpreter."""
    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)
