"""Repository check: the assumptions this package makes about the pinned upstream Transformers still hold.

- `NATIVE_PER_LAYER_MODEL_TYPES` lists exactly the model types whose modeling code reads `per_layer_config` itself,
  and `NATIVE_PER_LAYER_MODEL_CLASSES` exactly the model classes of `modeling_layers.py` that do.
- Every registry entry resolves: its module and classes exist and its skip replacements can be built.

Run by `make quality`; exits non-zero with a message naming what drifted.
"""

import ast
import importlib.util
import sys
from pathlib import Path

from transformers.heterogeneity import NATIVE_PER_LAYER_MODEL_TYPES, SUPPORTED_ARCHITECTURES
from transformers.heterogeneity.checkpoint_formats import CHECKPOINT_FORMATS
from transformers.heterogeneity.supported_models import NATIVE_PER_LAYER_MODEL_CLASSES
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES, model_type_to_module_name


def native_model_types() -> set[str]:
    """Model types whose upstream modeling module mentions `per_layer_config`."""
    models_dir = Path(importlib.util.find_spec("transformers.models").origin).parent
    native = set()
    for model_type in CONFIG_MAPPING_NAMES:
        if model_type in CHECKPOINT_FORMATS:  # this package's families (in upstream's mappings in the patched tree)
            continue
        module_name = model_type_to_module_name(model_type)
        modeling_file = models_dir / module_name / f"modeling_{module_name}.py"
        if modeling_file.is_file() and "per_layer_config" in modeling_file.read_text(encoding="utf-8"):
            native.add(model_type)
    return native


def native_layer_classes() -> set[str]:
    """`PreTrainedModel` subclasses of `modeling_layers.py` whose source mentions `per_layer_config`."""
    path = Path(importlib.util.find_spec("transformers.modeling_layers").origin)
    source = path.read_text(encoding="utf-8")
    return {
        node.name
        for node in ast.parse(source).body
        if isinstance(node, ast.ClassDef)
        and any(getattr(base, "id", None) == "PreTrainedModel" for base in node.bases)
        and "per_layer_config" in ast.get_source_segment(source, node)
    }


def main() -> int:
    errors = []
    native_classes = native_layer_classes()
    if native_classes != set(NATIVE_PER_LAYER_MODEL_CLASSES):
        errors.append(
            f"NATIVE_PER_LAYER_MODEL_CLASSES is out of date: upstream's modeling_layers.py has {sorted(native_classes)}."
        )
    expected = native_model_types()
    if expected != set(NATIVE_PER_LAYER_MODEL_TYPES):
        errors.append(
            "NATIVE_PER_LAYER_MODEL_TYPES is out of date: missing "
            f"{sorted(expected - NATIVE_PER_LAYER_MODEL_TYPES)}, extra {sorted(NATIVE_PER_LAYER_MODEL_TYPES - expected)}."
        )
    for model_type, spec in SUPPORTED_ARCHITECTURES.items():
        try:
            spec.resolve()
        except (AttributeError, ImportError, ValueError) as error:
            errors.append(f"Registry entry '{model_type}' does not resolve: {error}")
    for error in errors:
        print(error, file=sys.stderr)
    if not errors:
        print(f"Upstream checks passed ({len(SUPPORTED_ARCHITECTURES)} architectures, {len(expected)} native).")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
