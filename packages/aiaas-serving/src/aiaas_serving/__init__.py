"""aiaas-serving: a torch dynamic-batching runtime, model adapters and OpenAI-compatible ASGI
endpoints.

``import aiaas_serving`` is cheap and never imports torch: each name is imported from its private
module the first time it is used (the runtime and the adapters bring torch in).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiaas_core import lazy_exports

__version__ = "0.1.0"

# name -> private module that defines it. Kept in step with __all__ by tests/test_public_api.py.
_LAZY: dict[str, str] = {
    # _adapter
    "ModelAdapter": "_adapter",
    "StreamingModelAdapter": "_adapter",
    "TextInput": "_adapter",
    # _asgi
    "EmbeddingsOutcome": "_asgi",
    "OpenAIEmbeddings": "_asgi",
    "mount_openai": "_asgi",
    "openai_error_response": "_asgi",
    # _embedding
    "BertConfig": "_embedding",
    "BertEncoder": "_embedding",
    "SentenceEmbeddingAdapter": "_embedding",
    "load_bert_encoder": "_embedding",
    "minilm_model_dir": "_embedding",
    # _errors
    "Cancelled": "_errors",
    "DeadlineExceeded": "_errors",
    "GatewayTimeoutError": "_errors",
    "InputTooLarge": "_errors",
    "InvalidInput": "_errors",
    "ModelError": "_errors",
    "ModelNotFound": "_errors",
    "Overloaded": "_errors",
    "ServingError": "_errors",
    "ShuttingDown": "_errors",
    # _metrics
    "HistogramSnapshot": "_metrics",
    "InMemoryMetrics": "_metrics",
    "MetricSpec": "_metrics",
    "PrometheusMetrics": "_metrics",
    "ServingMetrics": "_metrics",
    # _openai_generation
    "GenerationOutcome": "_openai_generation",
    "OpenAIGeneration": "_openai_generation",
    # _policy
    "BatchPolicy": "_policy",
    "ExecutionOptions": "_policy",
    "default_buckets": "_policy",
    # _runtime
    "Runtime": "_runtime",
    # _served
    "ModelInfo": "_served",
    "RequestHandle": "_served",
    "ResponseStream": "_served",
    "ServedModel": "_served",
    # _sync
    "SyncRuntime": "_sync",
    # _tensor_adapter
    "TensorAdapter": "_tensor_adapter",
}

__all__ = [
    "BatchPolicy",
    "BertConfig",
    "BertEncoder",
    "Cancelled",
    "DeadlineExceeded",
    "EmbeddingsOutcome",
    "ExecutionOptions",
    "GatewayTimeoutError",
    "GenerationOutcome",
    "HistogramSnapshot",
    "InMemoryMetrics",
    "InputTooLarge",
    "InvalidInput",
    "MetricSpec",
    "ModelAdapter",
    "ModelError",
    "ModelInfo",
    "ModelNotFound",
    "OpenAIEmbeddings",
    "OpenAIGeneration",
    "Overloaded",
    "PrometheusMetrics",
    "RequestHandle",
    "ResponseStream",
    "Runtime",
    "SentenceEmbeddingAdapter",
    "ServedModel",
    "ServingError",
    "ServingMetrics",
    "ShuttingDown",
    "StreamingModelAdapter",
    "SyncRuntime",
    "TensorAdapter",
    "TextInput",
    "__version__",
    "default_buckets",
    "load_bert_encoder",
    "minilm_model_dir",
    "mount_openai",
    "openai_error_response",
]

if TYPE_CHECKING:
    from aiaas_serving._adapter import ModelAdapter, StreamingModelAdapter, TextInput
    from aiaas_serving._asgi import (
        EmbeddingsOutcome,
        OpenAIEmbeddings,
        mount_openai,
        openai_error_response,
    )
    from aiaas_serving._embedding import (
        BertConfig,
        BertEncoder,
        SentenceEmbeddingAdapter,
        load_bert_encoder,
        minilm_model_dir,
    )
    from aiaas_serving._errors import (
        Cancelled,
        DeadlineExceeded,
        GatewayTimeoutError,
        InputTooLarge,
        InvalidInput,
        ModelError,
        ModelNotFound,
        Overloaded,
        ServingError,
        ShuttingDown,
    )
    from aiaas_serving._metrics import (
        HistogramSnapshot,
        InMemoryMetrics,
        MetricSpec,
        PrometheusMetrics,
        ServingMetrics,
    )
    from aiaas_serving._openai_generation import GenerationOutcome, OpenAIGeneration
    from aiaas_serving._policy import BatchPolicy, ExecutionOptions, default_buckets
    from aiaas_serving._runtime import Runtime
    from aiaas_serving._served import ModelInfo, RequestHandle, ResponseStream, ServedModel
    from aiaas_serving._sync import SyncRuntime
    from aiaas_serving._tensor_adapter import TensorAdapter


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
