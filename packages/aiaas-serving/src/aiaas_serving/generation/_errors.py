"""The errors of loading and configuring a generation model, each with a stable code.

::

    ConfigError (aiaas_core)
    └── ModelLoadError                    MODEL_LOAD_FAILED               500
        ├── ModelConfigInvalid            MODEL_CONFIG_INVALID            500
        ├── ModelFileInvalid              MODEL_FILE_INVALID              500
        │   └── ModelArchitectureUnsupported  MODEL_ARCHITECTURE_UNSUPPORTED  500
        ├── ModelPackageMissing           MODEL_PACKAGE_MISSING           500
        ├── ChatTemplateMissing           CHAT_TEMPLATE_MISSING           500
        └── KVCacheBudgetTooSmall         KV_CACHE_BUDGET_TOO_SMALL       500

They are operator errors (a bad file, a missing package, a budget too small), raised while a
model is loaded or an engine is built, never on a client's request: their messages name the
file or setting at fault and what to do about it.
"""

from __future__ import annotations

from aiaas_core import ConfigError

__all__ = [
    "ChatTemplateMissing",
    "KVCacheBudgetTooSmall",
    "ModelArchitectureUnsupported",
    "ModelConfigInvalid",
    "ModelFileInvalid",
    "ModelLoadError",
    "ModelPackageMissing",
]


class ModelLoadError(ConfigError):
    """Base of every error of loading or configuring a generation model."""

    code = "MODEL_LOAD_FAILED"
    title = "Model could not be loaded"


class ModelConfigInvalid(ModelLoadError):  # noqa: N818 -- named for the outcome, like the serving errors
    """A model configuration value is out of range or inconsistent with the others."""

    code = "MODEL_CONFIG_INVALID"
    title = "Invalid model configuration"


class ModelFileInvalid(ModelLoadError):  # noqa: N818 -- named for the outcome, like the serving errors
    """A model file or folder is missing, truncated, or lacks a tensor or setting it needs."""

    code = "MODEL_FILE_INVALID"
    title = "Invalid model file"


class ModelArchitectureUnsupported(ModelFileInvalid):
    """The model file is well formed but holds an architecture this engine does not run."""

    code = "MODEL_ARCHITECTURE_UNSUPPORTED"
    title = "Unsupported model architecture"


class ModelPackageMissing(ModelLoadError):  # noqa: N818 -- named for the outcome
    """A package the model or its loader needs is not installed."""

    code = "MODEL_PACKAGE_MISSING"
    title = "Model package missing"


class ChatTemplateMissing(ModelLoadError):  # noqa: N818 -- named for the outcome
    """The model ships no chat template, so chat messages cannot be rendered into a prompt."""

    code = "CHAT_TEMPLATE_MISSING"
    title = "Chat template missing"


class KVCacheBudgetTooSmall(ModelLoadError):  # noqa: N818 -- named for the outcome
    """The memory budget given to the KV cache holds no block at all."""

    code = "KV_CACHE_BUDGET_TOO_SMALL"
    title = "KV cache budget too small"
