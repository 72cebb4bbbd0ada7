"""LLM generation: a Llama-family model in plain torch over a paged KV cache.

Import it as ``aiaas_serving.generation`` (it needs torch; ``import aiaas_serving`` does not).
"""

from __future__ import annotations

from aiaas_serving.generation._batch import ForwardBatch
from aiaas_serving.generation._blocks import BlockManager
from aiaas_serving.generation._config import LlamaConfig, RopeScaling
from aiaas_serving.generation._engine import (
    ContextLengthExceeded,
    GenerationEngine,
    GenerationStream,
)
from aiaas_serving.generation._errors import (
    ChatTemplateMissing,
    KVCacheBudgetTooSmall,
    ModelArchitectureUnsupported,
    ModelConfigInvalid,
    ModelFileInvalid,
    ModelLoadError,
    ModelPackageMissing,
)
from aiaas_serving.generation._gguf import (
    load_gguf,
    load_gguf_tokenizer,
    load_smollm2,
    smollm2_gguf_path,
)
from aiaas_serving.generation._hf import load_hf_folder
from aiaas_serving.generation._kv_cache import PagedKVCache
from aiaas_serving.generation._loaded import GenerationModel
from aiaas_serving.generation._model import LlamaForCausalLM
from aiaas_serving.generation._request import (
    EngineOptions,
    EngineStats,
    GenerationDelta,
    GenerationResult,
)
from aiaas_serving.generation._sampling import (
    InvalidSamplingParams,
    SamplingParams,
    TokenLogprob,
)
from aiaas_serving.generation._scheduler import Scheduler
from aiaas_serving.generation._tokenizer import GenerationTokenizer, IncrementalDetokenizer

__all__ = [
    "BlockManager",
    "ChatTemplateMissing",
    "ContextLengthExceeded",
    "EngineOptions",
    "EngineStats",
    "ForwardBatch",
    "GenerationDelta",
    "GenerationEngine",
    "GenerationModel",
    "GenerationResult",
    "GenerationStream",
    "GenerationTokenizer",
    "IncrementalDetokenizer",
    "InvalidSamplingParams",
    "KVCacheBudgetTooSmall",
    "LlamaConfig",
    "LlamaForCausalLM",
    "ModelArchitectureUnsupported",
    "ModelConfigInvalid",
    "ModelFileInvalid",
    "ModelLoadError",
    "ModelPackageMissing",
    "PagedKVCache",
    "RopeScaling",
    "SamplingParams",
    "Scheduler",
    "TokenLogprob",
    "load_gguf",
    "load_gguf_tokenizer",
    "load_hf_folder",
    "load_smollm2",
    "smollm2_gguf_path",
]
