"""The GGUF-built tokenizer and chat template equal transformers'; streaming text never splits."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import transformers
from hypothesis import given
from hypothesis import strategies as st

from aiaas_serving import InvalidInput
from aiaas_serving.generation import (
    ChatTemplateMissing,
    GenerationTokenizer,
    ModelArchitectureUnsupported,
    ModelFileInvalid,
    ModelPackageMissing,
)
from aiaas_serving.generation._tokenizer import tokenizer_from_gguf_metadata

MISSING_BYTES = frozenset({0x04, 0x06, 0x13, 0x14, 0x16, 0x1D, 0xF1, 0xF2})

CONVERSATIONS: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
    [
        {"role": "system", "content": "You are a terse assistant. Réponds en français."},
        {"role": "user", "content": "Où se trouve la tour Eiffel ? Ça coûte combien ?"},
        {"role": "assistant", "content": "À Paris. Environ 29,40 € pour le sommet."},
        {"role": "user", "content": "Et le Mont-Saint-Michel ?"},
    ],
    [
        {"role": "user", "content": "日本の首都はどこですか？"},  # noqa: RUF001
        {"role": "assistant", "content": "東京です。人口は約1400万人です。"},
        {"role": "user", "content": "谢谢！再见 👋🏽 — naïve café, Zürich, İstanbul, Ærø"},  # noqa: RUF001
    ],
    [
        {"role": "system", "content": "  Leading spaces,\ttabs\nand\r\nnewlines.  "},
        {"role": "user", "content": "Code: `def f(x): return x**2 + 1_000` and 3.14159e-10"},
        {"role": "assistant", "content": "😀😃 🇫🇷 👨‍👩‍👧‍👦 ∑∫√ Ω≈ç"},
        {"role": "user", "content": "Don't, can't, I'll, we've <not special> <|im_start|> 1234567"},
    ],
]


@pytest.fixture(scope="module")
def hf_tokenizer(smollm2_path: Path) -> Any:
    return transformers.AutoTokenizer.from_pretrained(
        smollm2_path.parent, gguf_file=smollm2_path.name
    )


@pytest.mark.parametrize("index", range(len(CONVERSATIONS)))
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_chat_prompt_and_ids_equal_transformers(
    smollm2_tokenizer: GenerationTokenizer,
    hf_tokenizer: Any,
    index: int,
    add_generation_prompt: bool,
) -> None:
    messages = CONVERSATIONS[index]
    ours = smollm2_tokenizer.apply_chat_template(
        messages, add_generation_prompt=add_generation_prompt
    )
    theirs = hf_tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    assert ours == theirs
    ids = smollm2_tokenizer.encode(ours)
    assert ids == hf_tokenizer.encode(theirs, add_special_tokens=False)
    assert smollm2_tokenizer.decode(ids, skip_special_tokens=False) == ours
    assert smollm2_tokenizer.decode(ids) == hf_tokenizer.decode(ids, skip_special_tokens=True)


def test_tokenizer_metadata(smollm2_tokenizer: GenerationTokenizer, hf_tokenizer: Any) -> None:
    assert smollm2_tokenizer.vocab_size == 49152
    assert smollm2_tokenizer.eos_token_ids == (2,)  # <|im_end|>
    assert smollm2_tokenizer.bos_token_id == 1
    assert smollm2_tokenizer.token_text(2) == "<|im_end|>"
    assert smollm2_tokenizer.token_text(504) == "The"
    # Control tokens written in text stay whole, exactly as transformers treats them.
    text = "<|im_start|>user\nhi<|im_end|>"
    assert smollm2_tokenizer.encode(text)[0] == 1
    assert smollm2_tokenizer.encode(text) == hf_tokenizer.encode(text, add_special_tokens=False)
    assert smollm2_tokenizer.encode("hi", add_special_tokens=True) == hf_tokenizer.encode("hi")


@given(text=st.text(max_size=40))
def test_any_text_encodes_like_transformers_and_round_trips(
    smollm2_tokenizer: GenerationTokenizer, hf_tokenizer: Any, text: str
) -> None:
    ids = smollm2_tokenizer.encode(text)
    assert ids == hf_tokenizer.encode(text, add_special_tokens=False)
    detok = smollm2_tokenizer.detokenizer()
    deltas = [detok.push(token) for token in ids]
    deltas.append(detok.flush())
    assert "".join(deltas) == smollm2_tokenizer.decode(ids)
    # SmolLM2's vocabulary lacks a few bytes (some controls, and lead bytes of planes 4-15),
    # so characters using them lose bytes, in transformers' tokenizer alike; all else round-trips.
    if not MISSING_BYTES.intersection(text.encode("utf-8")):
        assert "".join(deltas) == text
        assert all("\ufffd" not in delta for delta in deltas) or "\ufffd" in text


@given(ids=st.lists(st.integers(min_value=0, max_value=49151), max_size=30))
def test_any_ids_stream_to_the_full_decode(
    smollm2_tokenizer: GenerationTokenizer, ids: list[int]
) -> None:
    full = smollm2_tokenizer.decode(ids)
    detok = smollm2_tokenizer.detokenizer()
    deltas = [detok.push(token) for token in ids]
    deltas.append(detok.flush())
    assert "".join(deltas) == full
    assert detok.text == full
    # A delta may hold U+FFFD only where the full decode has one at that place.
    offset = 0
    for delta in deltas:
        for position, char in enumerate(delta):
            if char == "\ufffd":
                assert full[offset + position] == "\ufffd"
        offset += len(delta)


def test_detokenizer_holds_back_split_characters(smollm2_tokenizer: GenerationTokenizer) -> None:
    ids = smollm2_tokenizer.encode("é👋🏽 東京")
    detok = smollm2_tokenizer.detokenizer()
    deltas = [detok.push(token) for token in ids]
    assert "".join(deltas) + detok.flush() == "é👋🏽 東京"
    assert all("\ufffd" not in delta for delta in deltas)
    assert deltas.count("") >= 1  # the emoji's bytes span several tokens
    # An incomplete character at the very end comes out as U+FFFD only on flush.
    emoji = smollm2_tokenizer.encode("👋")
    assert len(emoji) > 1
    cut = smollm2_tokenizer.detokenizer()
    assert [cut.push(token) for token in emoji[:-1]] == [""] * (len(emoji) - 1)
    assert cut.flush() == "\ufffd"
    assert cut.token_ids == emoji[:-1]
    special = smollm2_tokenizer.detokenizer(skip_special_tokens=False)
    assert special.push(2) == "<|im_end|>"


def test_hostile_input_is_refused(smollm2_tokenizer: GenerationTokenizer) -> None:
    for bad in (-1, 49152, True, 1.0, "3"):
        with pytest.raises(InvalidInput, match="not in the vocabulary"):
            smollm2_tokenizer.decode([bad])  # type: ignore[list-item]
    with pytest.raises(InvalidInput, match="not in the vocabulary"):
        smollm2_tokenizer.detokenizer().push(10**9)
    with pytest.raises(InvalidInput, match="must be a string"):
        smollm2_tokenizer.encode(b"bytes")  # type: ignore[arg-type]
    for messages in ("hello", [], [{"content": "no role"}], ["not a mapping"]):
        with pytest.raises(InvalidInput):
            smollm2_tokenizer.apply_chat_template(messages)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="could not render"):
        smollm2_tokenizer.apply_chat_template([{"role": "user", "content": None}])
    # A template that tries to escape its sandbox is stopped, not run.
    escape = GenerationTokenizer(
        smollm2_tokenizer.backend,
        chat_template="{{ messages.__class__.__mro__[1].__subclasses__() }}",
    )
    with pytest.raises(InvalidInput, match="refused"):
        escape.apply_chat_template([{"role": "user", "content": "x"}])


def test_template_errors(smollm2_tokenizer: GenerationTokenizer) -> None:
    plain = GenerationTokenizer(smollm2_tokenizer.backend)
    with pytest.raises(ChatTemplateMissing, match="no chat template") as caught:
        plain.apply_chat_template([{"role": "user", "content": "hi"}])
    assert caught.value.code == "CHAT_TEMPLATE_MISSING"
    strict = GenerationTokenizer(
        smollm2_tokenizer.backend,
        chat_template=(
            "{% if messages[0]['role'] != 'user' %}"
            "{{ raise_exception('Conversations must start with a user message') }}{% endif %}"
            "{{ bos_token }}{{ messages | tojson }}{% if add_generation_prompt %}>{% endif %}"
        ),
        special_tokens={"bos_token": "<s>", "eos_token": None},
    )
    rendered = strict.apply_chat_template([{"role": "user", "content": "é"}])
    assert rendered == '<s>[{"role": "user", "content": "é"}]>'
    dated = GenerationTokenizer(
        smollm2_tokenizer.backend, chat_template="{{ strftime_now('%Y') }}|{{ tools[0] }}"
    )
    year = dated.apply_chat_template([{"role": "user", "content": "x"}], tools=["calc"])
    assert year.endswith("|calc")
    assert len(year.split("|")[0]) == 4
    with pytest.raises(InvalidInput, match="must start with a user message"):
        strict.apply_chat_template([{"role": "system", "content": "x"}])
    broken = GenerationTokenizer(smollm2_tokenizer.backend, chat_template="{% for %}")
    with pytest.raises(ModelFileInvalid, match="not valid jinja2"):
        broken.apply_chat_template([{"role": "user", "content": "x"}])


def test_missing_jinja2_is_a_clear_error(
    smollm2_tokenizer: GenerationTokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = GenerationTokenizer(smollm2_tokenizer.backend, chat_template="{{ messages }}")
    monkeypatch.setitem(sys.modules, "jinja2", None)
    with pytest.raises(ModelPackageMissing, match=r"aiaas-serving\[llm\]") as caught:
        fresh.apply_chat_template([{"role": "user", "content": "x"}])
    assert caught.value.code == "MODEL_PACKAGE_MISSING"


def test_gguf_metadata_errors() -> None:
    base: dict[str, Any] = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.tokens": ["a", "b", "ab"],
        "tokenizer.ggml.merges": ["a b"],
    }
    small = tokenizer_from_gguf_metadata(base)
    assert small.encode("abab") == [2, 2]
    assert small.eos_token_ids == ()
    assert small.chat_template is None
    with pytest.raises(ModelArchitectureUnsupported, match="'bert'"):
        tokenizer_from_gguf_metadata({**base, "tokenizer.ggml.model": "bert"})
    with pytest.raises(ModelArchitectureUnsupported, match="pre-tokenizer 'klingon'"):
        tokenizer_from_gguf_metadata({**base, "tokenizer.ggml.pre": "klingon"})
    with pytest.raises(ModelFileInvalid, match=r"lacks tokenizer\.ggml\.tokens"):
        tokenizer_from_gguf_metadata({**base, "tokenizer.ggml.tokens": []})
    with pytest.raises(ModelFileInvalid, match="malformed GGUF merge"):
        tokenizer_from_gguf_metadata({**base, "tokenizer.ggml.merges": ["ab"]})
    with_bos = tokenizer_from_gguf_metadata(
        {**base, "tokenizer.ggml.bos_token_id": 0, "tokenizer.ggml.add_bos_token": True}
    )
    assert with_bos.encode("b", add_special_tokens=True) == [0, 1]


def test_from_tokenizer_json(smollm2_tokenizer: GenerationTokenizer) -> None:
    text = smollm2_tokenizer.backend.to_str()
    config = {
        "eos_token": {"content": "<|im_end|>", "special": True},
        "bos_token": "<|im_start|>",
        "chat_template": [{"name": "default", "template": "{{ eos_token }}"}],
    }
    loaded = GenerationTokenizer.from_tokenizer_json(text, config, eos_token_ids=[0, 2])
    assert loaded.eos_token_ids == (2, 0)
    assert loaded.bos_token_id == 1
    assert loaded.apply_chat_template([{"role": "user", "content": "x"}]) == "<|im_end|>"
    assert loaded.encode("Bonjour 東京") == smollm2_tokenizer.encode("Bonjour 東京")
    with pytest.raises(ModelFileInvalid, match=r"tokenizer\.json could not be read"):
        GenerationTokenizer.from_tokenizer_json(json.dumps({"model": "nonsense"}))
