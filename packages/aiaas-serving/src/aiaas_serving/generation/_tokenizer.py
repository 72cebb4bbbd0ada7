"""The generation tokenizer: text <-> token ids, chat templates, incremental detokenising.

A :class:`GenerationTokenizer` wraps a ``tokenizers.Tokenizer`` -- read from a ``tokenizer.json``
or rebuilt from a GGUF file's ``tokenizer.ggml.*`` metadata (byte-level or sentencepiece BPE) --
with the model's special tokens and its chat template, rendered by jinja2 in a sandbox as
``transformers`` renders it. :class:`IncrementalDetokenizer` turns a stream of token ids into
text deltas that never end inside a multi-byte character or a BPE piece.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from numbers import Integral
from typing import TYPE_CHECKING, Any, Final

from aiaas_serving._errors import InvalidInput
from aiaas_serving.generation._errors import (
    ChatTemplateMissing,
    ModelArchitectureUnsupported,
    ModelFileInvalid,
    ModelPackageMissing,
)

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = ["GenerationTokenizer", "IncrementalDetokenizer", "tokenizer_from_gguf_metadata"]

_REPLACEMENT: Final = "\ufffd"
_CONTROL_TOKEN: Final = 3  # llama.cpp's token types: 1 normal, 3 control, 4 user-defined
_USER_DEFINED_TOKEN: Final = 4
_GGUF_TOKENIZER_KINDS: Final = frozenset({"gpt2", "llama"})
_SPIECE_SPACE: Final = "\u2581"  # sentencepiece's "▁", which stands for a space

# llama.cpp's pre-tokenizer splits, by tokenizer.ggml.pre (see llama-vocab.cpp): the regexes
# run in order, each splitting the pieces the previous one left.
_GPT2_SPLIT: Final = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3_SPLIT: Final = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT: Final = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_PRE_TOKENIZER_SPLITS: Final[Mapping[str, tuple[str, ...]]] = {
    "default": (_GPT2_SPLIT,),
    "gpt2": (_GPT2_SPLIT,),
    "smollm": (r"\p{N}", _GPT2_SPLIT),
    "starcoder": (r"\p{N}", _GPT2_SPLIT),
    "refact": (r"\p{N}", _GPT2_SPLIT),
    "llama3": (_LLAMA3_SPLIT,),
    "llama-bpe": (_LLAMA3_SPLIT,),
    "smaug-bpe": (_LLAMA3_SPLIT,),
    "qwen2": (_QWEN2_SPLIT,),
}


def _require_tokenizers() -> Any:
    try:
        import tokenizers  # noqa: PLC0415 -- imported with the first tokenizer
    except ImportError:  # pragma: no cover - a dependency of aiaas-serving
        raise ModelPackageMissing(
            "the 'tokenizers' package is needed to tokenise: pip install tokenizers"
        ) from None
    return tokenizers


class GenerationTokenizer:
    """A model's tokenizer, special tokens and chat template.

    Build it with :func:`~aiaas_serving.generation.load_gguf` /
    :func:`~aiaas_serving.generation.load_hf_folder`, or from a ``tokenizers.Tokenizer`` directly.
    ``special_tokens`` maps the template variables ``bos_token``, ``eos_token``, ``unk_token``
    and ``pad_token`` to their text, as ``transformers`` passes them to a chat template.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        bos_token_id: int | None = None,
        eos_token_ids: Sequence[int] = (),
        chat_template: str | None = None,
        special_tokens: Mapping[str, str | None] | None = None,
    ) -> None:
        self._tokenizer = tokenizer
        self._vocab_size = int(tokenizer.get_vocab_size(with_added_tokens=True))
        self._bos_token_id = bos_token_id
        self._eos_token_ids = tuple(dict.fromkeys(int(token) for token in eos_token_ids))
        self._chat_template = chat_template
        self._special_tokens = {k: v for k, v in (special_tokens or {}).items() if v is not None}
        self._render: Callable[..., str] | None = None

    # -- properties -----------------------------------------------------------------------

    @property
    def backend(self) -> Tokenizer:
        """The underlying ``tokenizers.Tokenizer``."""
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        """Tokens the tokenizer knows, added tokens included."""
        return self._vocab_size

    @property
    def bos_token_id(self) -> int | None:
        """The beginning-of-sequence token, if the model has one."""
        return self._bos_token_id

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """Every token that ends a generation."""
        return self._eos_token_ids

    @property
    def chat_template(self) -> str | None:
        """The jinja2 chat template shipped with the model, if any."""
        return self._chat_template

    # -- text <-> ids ---------------------------------------------------------------------

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        """Token ids of ``text``; special tokens written in it (``<|im_start|>``) stay whole."""
        if not isinstance(text, str):
            raise InvalidInput(f"text to tokenise must be a string, got {type(text).__name__}")
        ids: list[int] = self._tokenizer.encode(text, add_special_tokens=add_special_tokens).ids
        return ids

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        """The text of ``ids`` (special tokens left out unless ``skip_special_tokens=False``)."""
        checked = self._check_ids(ids)
        text: str = self._tokenizer.decode(checked, skip_special_tokens=skip_special_tokens)
        return text

    def token_text(self, token_id: int) -> str:
        """One token's text as decoded alone (for logprobs); may hold U+FFFD for a byte piece."""
        return self.decode([token_id], skip_special_tokens=False)

    def detokenizer(self, *, skip_special_tokens: bool = True) -> IncrementalDetokenizer:
        """A fresh :class:`IncrementalDetokenizer` for one generation."""
        return IncrementalDetokenizer(self, skip_special_tokens=skip_special_tokens)

    def _check_ids(self, ids: Sequence[int]) -> list[int]:
        checked: list[int] = []
        given: Sequence[object] = ids
        for token in given:
            value = -1
            if isinstance(token, bool):
                pass
            elif isinstance(token, Integral):
                value = int(token)
            if not 0 <= value < self._vocab_size:
                raise InvalidInput(
                    f"token id {token!r} is not in the vocabulary (0..{self._vocab_size - 1})"
                )
            checked.append(value)
        return checked

    # -- chat -----------------------------------------------------------------------------

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        **extra: Any,
    ) -> str:
        """Render ``messages`` (``{"role": ..., "content": ...}``) into the model's prompt text.

        Rendered by the model's own jinja2 template in a sandbox, with the variables
        ``transformers`` passes (``messages``, ``add_generation_prompt``, the special tokens,
        ``raise_exception``, ``strftime_now``); ``extra`` adds more (``tools``, ...). A model
        without a template raises :class:`ChatTemplateMissing`; malformed messages, or ones the
        template refuses, :class:`InvalidInput`.
        """
        render = self._compiled()
        given: object = messages
        if isinstance(given, str | bytes) or not isinstance(given, Sequence):
            raise InvalidInput("messages must be a list of {'role': ..., 'content': ...} objects")
        if not messages:
            raise InvalidInput("messages must hold at least one message")
        for index, message in enumerate(given):
            if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
                raise InvalidInput(f"message {index} must be an object with a string 'role'")
        jinja2 = _require_jinja2()
        variables = {**self._special_tokens, **extra}
        try:
            return render(
                messages=[dict(message) for message in messages],
                add_generation_prompt=add_generation_prompt,
                **variables,
            )
        except jinja2.TemplateError as exc:
            raise InvalidInput(f"the chat template refused the messages: {exc}") from exc
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            raise InvalidInput(
                f"the chat template could not render the messages ({type(exc).__name__}): "
                "check each message's role and content"
            ) from exc

    def _compiled(self) -> Callable[..., str]:
        if self._render is not None:
            return self._render
        if not self._chat_template:
            raise ChatTemplateMissing(
                "this model ships no chat template, so chat messages cannot be turned into a "
                "prompt: use a plain-text completion, or load a model whose files carry one "
                "(tokenizer_config.json 'chat_template' or GGUF 'tokenizer.chat_template')"
            )
        jinja2 = _require_jinja2()
        from jinja2.ext import loopcontrols  # noqa: PLC0415 -- jinja2 is an optional extra
        from jinja2.sandbox import ImmutableSandboxedEnvironment  # noqa: PLC0415

        def raise_exception(message: str) -> None:
            raise jinja2.TemplateError(message)

        def tojson(
            value: Any,
            ensure_ascii: bool = False,
            indent: int | None = None,
            separators: tuple[str, str] | None = None,
            sort_keys: bool = False,
        ) -> str:
            return json.dumps(
                value,
                ensure_ascii=ensure_ascii,
                indent=indent,
                separators=separators,
                sort_keys=sort_keys,
            )

        def strftime_now(format_: str) -> str:
            return datetime.now(tz=UTC).strftime(format_)

        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
        )
        env.filters["tojson"] = tojson
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = strftime_now
        try:
            template = env.from_string(self._chat_template)
        except jinja2.TemplateError as exc:
            raise ModelFileInvalid(f"the model's chat template is not valid jinja2: {exc}") from exc
        self._render = template.render
        return template.render

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_tokenizer_json(
        cls,
        tokenizer_json: str,
        tokenizer_config: Mapping[str, Any] | None = None,
        *,
        eos_token_ids: Sequence[int] = (),
        bos_token_id: int | None = None,
    ) -> GenerationTokenizer:
        """From a ``tokenizer.json`` text and ``tokenizer_config.json`` (template, tokens).

        ``eos_token_ids``/``bos_token_id`` (from ``config.json``) add to what the tokenizer
        config names.
        """
        tokenizers = _require_tokenizers()
        try:
            tokenizer = tokenizers.Tokenizer.from_str(tokenizer_json)
        except Exception as exc:  # noqa: BLE001 -- the Rust side raises plain Exception
            raise ModelFileInvalid(f"tokenizer.json could not be read: {exc}") from None
        config = dict(tokenizer_config or {})
        special: dict[str, str | None] = {}
        for name in ("bos_token", "eos_token", "unk_token", "pad_token"):
            value = config.get(name)
            if isinstance(value, Mapping):  # the serialised AddedToken form
                value = value.get("content")
            special[name] = value if isinstance(value, str) else None
        eos = list(eos_token_ids)
        if special["eos_token"] is not None:
            eos_id = tokenizer.token_to_id(special["eos_token"])
            if eos_id is not None:
                eos.insert(0, eos_id)
        bos = bos_token_id
        if special["bos_token"] is not None:
            bos = tokenizer.token_to_id(special["bos_token"])
        template = config.get("chat_template")
        if isinstance(template, list):  # named templates: take the default one
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, Mapping)}
            template = named.get("default")
        return cls(
            tokenizer,
            bos_token_id=bos,
            eos_token_ids=eos,
            chat_template=template if isinstance(template, str) else None,
            special_tokens=special,
        )


def _require_jinja2() -> Any:
    try:
        import jinja2  # noqa: PLC0415 -- an optional extra, imported on first use
    except ImportError:
        raise ModelPackageMissing(
            "rendering chat templates needs jinja2: pip install 'aiaas-serving[llm]'"
        ) from None
    return jinja2


def tokenizer_from_gguf_metadata(metadata: Mapping[str, Any]) -> GenerationTokenizer:
    """Rebuild a tokenizer from a GGUF file's ``tokenizer.*`` metadata, as transformers does.

    ``metadata`` maps the GGUF keys (``tokenizer.ggml.model``, ``...tokens``, ``...scores``,
    ``...merges``, ``...token_type``, ``...pre``, the special ids and flags,
    ``tokenizer.chat_template``) to plain Python values. Two kinds of vocabulary:

    * ``gpt2``, byte-level BPE (SmolLM2, Llama 3, Qwen2): the pre-tokenizer follows llama.cpp's
      for ``tokenizer.ggml.pre``;
    * ``llama``, sentencepiece BPE (Llama 2, Mistral): pieces with ``▁`` for spaces, merges
      ranked by the pieces' scores, ``<0x..>`` byte-fallback tokens for what no piece spells, a
      ``▁`` before the text unless ``tokenizer.ggml.add_space_prefix`` is false, and BOS added
      unless ``tokenizer.ggml.add_bos_token`` is false.

    A missing or malformed vocabulary raises :class:`ModelFileInvalid`; another kind
    :class:`ModelArchitectureUnsupported`.
    """
    tokenizers = _require_tokenizers()
    kind = metadata.get("tokenizer.ggml.model")
    if kind not in _GGUF_TOKENIZER_KINDS:
        raise ModelArchitectureUnsupported(
            f"the GGUF tokenizer is {kind!r}; the tokenizers rebuilt from GGUF metadata are "
            "byte-level BPE ('gpt2') and sentencepiece BPE ('llama'): load the model's Hugging "
            "Face folder (tokenizer.json) with load_hf_folder instead"
        )
    tokens = metadata.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
        raise ModelFileInvalid("the GGUF file lacks tokenizer.ggml.tokens (a list of strings)")
    types = metadata.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    if kind == "gpt2":
        tokenizer = _byte_level_bpe(tokenizers, metadata, tokens)
    else:
        tokenizer = _sentencepiece_bpe(tokenizers, metadata, tokens)
    control = [
        tokenizers.AddedToken(token, special=True, normalized=False)
        for token, kind_id in zip(tokens, types, strict=False)
        if kind_id == _CONTROL_TOKEN
    ]
    user = [
        tokenizers.AddedToken(token, special=False, normalized=False)
        for token, kind_id in zip(tokens, types, strict=False)
        if kind_id == _USER_DEFINED_TOKEN
    ]
    if control:
        tokenizer.add_special_tokens(control)
    if user:
        tokenizer.add_tokens(user)

    def token_of(key: str) -> int | None:
        value = metadata.get(f"tokenizer.ggml.{key}")
        return value if isinstance(value, int) and 0 <= value < len(tokens) else None

    special: dict[str, str | None] = {}
    for name, key in (
        ("bos_token", "bos_token_id"),
        ("eos_token", "eos_token_id"),
        ("unk_token", "unknown_token_id"),
        ("pad_token", "padding_token_id"),
    ):
        token_id = token_of(key)
        special[name] = tokens[token_id] if token_id is not None else None
    if kind == "llama":
        # transformers makes the named tokens special (<unk> is not a control token).
        named = dict.fromkeys(value for value in special.values() if value is not None)
        tokenizer.add_special_tokens(
            [tokenizers.AddedToken(token, special=True, normalized=False) for token in named]
        )
    bos, eos = token_of("bos_token_id"), token_of("eos_token_id")
    # llama.cpp adds BOS to a sentencepiece vocabulary whose file does not say otherwise.
    add_bos = metadata.get("tokenizer.ggml.add_bos_token", kind == "llama")
    add_eos = kind == "llama" and metadata.get("tokenizer.ggml.add_eos_token", False)
    template_pieces = [
        *([(tokens[bos], bos)] if add_bos and bos is not None else []),
        *([(tokens[eos], eos)] if add_eos and eos is not None else []),
    ]
    if template_pieces:
        first = f"{tokens[bos]}:0 " if add_bos and bos is not None else ""
        last = f" {tokens[eos]}:0" if add_eos and eos is not None else ""
        tokenizer.post_processor = tokenizers.processors.TemplateProcessing(
            single=f"{first}$A:0{last}",
            pair=f"{first}$A:0{last} {first.replace(':0', ':1')}$B:1{last.replace(':0', ':1')}",
            special_tokens=list(dict.fromkeys(template_pieces)),
        )
    template = metadata.get("tokenizer.chat_template")
    return GenerationTokenizer(
        tokenizer,
        bos_token_id=bos,
        eos_token_ids=() if eos is None else (eos,),
        chat_template=template if isinstance(template, str) else None,
        special_tokens=special,
    )


def _merge_pairs(metadata: Mapping[str, Any]) -> list[tuple[str, str]] | None:
    merges = metadata.get("tokenizer.ggml.merges")
    if merges is None:
        return None
    if not isinstance(merges, list):
        raise ModelFileInvalid("the GGUF tokenizer.ggml.merges must be a list of 'left right'")
    pairs: list[tuple[str, str]] = []
    for merge in merges:
        left, sep, right = str(merge).partition(" ")
        if not sep:
            raise ModelFileInvalid(f"malformed GGUF merge {merge!r}: expected 'left right'")
        pairs.append((left, right))
    return pairs


def _byte_level_bpe(tokenizers: Any, metadata: Mapping[str, Any], tokens: list[str]) -> Tokenizer:
    pre = metadata.get("tokenizer.ggml.pre", "default")
    splits = _PRE_TOKENIZER_SPLITS.get(pre)
    if splits is None:
        raise ModelArchitectureUnsupported(
            f"GGUF pre-tokenizer {pre!r} is not supported (supported: "
            f"{', '.join(sorted(_PRE_TOKENIZER_SPLITS))})"
        )
    pairs = _merge_pairs(metadata)
    if pairs is None:
        raise ModelFileInvalid("the GGUF file lacks tokenizer.ggml.merges")
    vocab = {token: index for index, token in enumerate(tokens)}
    models, pre_tokenizers, decoders = (
        tokenizers.models,
        tokenizers.pre_tokenizers,
        tokenizers.decoders,
    )
    tokenizer: Tokenizer = tokenizers.Tokenizer(
        models.BPE(vocab=vocab, merges=pairs, fuse_unk=False, byte_fallback=False)
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            *(
                pre_tokenizers.Split(tokenizers.Regex(split), behavior="isolated")
                for split in splits
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _sentencepiece_bpe(
    tokenizers: Any, metadata: Mapping[str, Any], tokens: list[str]
) -> Tokenizer:
    """The BPE with byte fallback transformers' GGUF converter builds for a 'llama' vocabulary."""
    vocab = {token: index for index, token in enumerate(tokens)}
    pairs = _merge_pairs(metadata)
    if pairs is None:
        scores = metadata.get("tokenizer.ggml.scores")
        if (
            not isinstance(scores, list)
            or len(scores) != len(tokens)
            or not all(
                isinstance(s, int | float) and not isinstance(s, bool) and math.isfinite(s)
                for s in scores
            )
        ):
            raise ModelFileInvalid(
                "the GGUF sentencepiece ('llama') tokenizer needs tokenizer.ggml.scores, one "
                f"finite number per token ({len(tokens)}), to rank its merges: the file lacks "
                "them or they are malformed; convert the model again with llama.cpp's "
                "convert_hf_to_gguf.py"
            )
        pairs = _merges_from_scores(tokens, vocab, scores)
    models, pre_tokenizers, decoders = (
        tokenizers.models,
        tokenizers.pre_tokenizers,
        tokenizers.decoders,
    )
    tokenizer: Tokenizer = tokenizers.Tokenizer(
        models.BPE(vocab=vocab, merges=pairs, fuse_unk=True, byte_fallback=True)
    )
    prefix = metadata.get("tokenizer.ggml.add_space_prefix", True) is not False
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement=_SPIECE_SPACE, prepend_scheme="first" if prefix else "never", split=False
    )
    steps = [decoders.Replace(_SPIECE_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if prefix:
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    tokenizer.decoder = decoders.Sequence(steps)
    return tokenizer


def _merges_from_scores(
    tokens: list[str], vocab: Mapping[str, int], scores: list[float]
) -> list[tuple[str, str]]:
    """The merges a scored vocabulary implies: every split of a piece into two pieces, the
    pieces with the best score first (ties: longer left, then longer right piece first)."""
    ranked: list[tuple[str, str, float]] = []
    for piece, score in dict(zip(tokens, scores, strict=True)).items():
        splits = [
            (piece[:cut], piece[cut:])
            for cut in range(1, len(piece))
            if piece[:cut] in vocab and piece[cut:] in vocab
        ]
        splits.sort(key=lambda pair: (vocab[pair[0]], vocab[pair[1]]))
        ranked.extend((left, right, score) for left, right in splits)
    ranked.sort(key=lambda merge: (merge[2], len(merge[0]), len(merge[1])), reverse=True)
    return [(left, right) for left, right, _ in ranked]


class IncrementalDetokenizer:
    """Turns generated token ids, one at a time, into text deltas safe to stream.

    :meth:`push` returns the text the new token completes -- possibly ``""`` while a multi-byte
    character or a piece of a word is still incomplete -- and :meth:`flush` whatever is held
    back at the end. The deltas concatenated equal ``tokenizer.decode(all_ids)``, and a delta
    holds U+FFFD only where that full decode does.

    It decodes a short window of recent tokens twice per push (before and after the new one)
    and emits the difference once the window's text ends on a whole character: the window
    starts at the last point where the text was complete, so context-dependent decoders
    (leading-space handling, byte pieces) see the same tokens the full decode sees.
    """

    def __init__(self, tokenizer: GenerationTokenizer, *, skip_special_tokens: bool = True) -> None:
        self._tokenizer = tokenizer
        self._skip = skip_special_tokens
        self._ids: list[int] = []
        self._prefix = 0  # window start: the text before it is emitted
        self._read = 0  # the tokens before this are emitted
        self._text: list[str] = []

    @property
    def token_ids(self) -> list[int]:
        """Every id pushed so far (a copy)."""
        return list(self._ids)

    @property
    def text(self) -> str:
        """The text emitted so far."""
        return "".join(self._text)

    def push(self, token_id: int) -> str:
        """Add one generated token; return the text it completes (may be ``""``)."""
        self._tokenizer._check_ids([token_id])
        self._ids.append(token_id)
        decode = self._tokenizer.backend.decode
        before: str = decode(self._ids[self._prefix : self._read], skip_special_tokens=self._skip)
        after: str = decode(self._ids[self._prefix :], skip_special_tokens=self._skip)
        if len(after) > len(before) and not after.endswith(_REPLACEMENT):
            delta = after[len(before) :]
            self._prefix = self._read
            self._read = len(self._ids)
            self._text.append(delta)
            return delta
        return ""

    def flush(self) -> str:
        """Return whatever is held back (an incomplete character becomes U+FFFD)."""
        decode = self._tokenizer.backend.decode
        before: str = decode(self._ids[self._prefix : self._read], skip_special_tokens=self._skip)
        after: str = decode(self._ids[self._prefix :], skip_special_tokens=self._skip)
        delta = after[len(before) :]
        self._prefix = self._read = len(self._ids)
        if delta:
            self._text.append(delta)
        return delta
