"""Hidden-state extraction on a tiny random Llama, checked against transformers itself."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import safetensors
import safetensors.numpy
import torch
from transformers import PreTrainedTokenizerBase

from reprlab.schemas import ExtractionSpec
from reprlab.schemas.specs import AttentionSpec, BuiltinDataset, ICLCondition, PromptSpec
from reprlab.worker.data import load_dataset
from reprlab.worker.errors import ExtractionError, JobCancelled, SpecError
from reprlab.worker.extract import Activations, extract_activations, resolve_layers
from reprlab.worker.prompts import Prompt, build_prompts

N_BLOCKS = 4
PROMPTS = [
    "Review: The blender broke after two days.\nSentiment:",
    "Hi",
    "Review: Lovely staff, spotless rooms and a view of the sea!\n\nReview: Awful.\nSentiment:",
    "What is 345 + 78? A. 423 B. 413",
    "Tent with flimsy zips; 10/10 would not buy again (seriously).",
]


def _hf_hidden_states(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, prompt: str):
    """transformers' own hidden states of one unpadded prompt: [n_blocks + 1, seq, hidden]."""
    ids = tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        out = model(**ids, output_hidden_states=True)
    return torch.stack([h[0] for h in out.hidden_states])


def test_residual_matches_transformers_hidden_states(tiny) -> None:
    model, tokenizer = tiny
    acts = extract_activations(model, tokenizer, PROMPTS, ExtractionSpec(batch_size=2))
    assert acts.layers == list(range(N_BLOCKS + 1))
    assert acts.states.shape == (len(PROMPTS), N_BLOCKS + 1, 64)
    assert acts.states.dtype == torch.float32 and acts.states.device.type == "cpu"
    for p, prompt in enumerate(PROMPTS):
        ref = _hf_hidden_states(model, tokenizer, prompt)[:, -1]
        torch.testing.assert_close(acts.states[p], ref, atol=1e-5, rtol=1e-5)
        assert acts.n_tokens[p] == len(tokenizer(prompt)["input_ids"])


def test_block_input_norm_is_the_normalised_block_input(tiny) -> None:
    model, tokenizer = tiny
    spec = ExtractionSpec(hidden_state="block_input_norm", batch_size=3)
    acts = extract_activations(model, tokenizer, PROMPTS, spec)
    blocks = model.model.layers
    for p, prompt in enumerate(PROMPTS):
        hs = _hf_hidden_states(model, tokenizer, prompt)
        with torch.inference_mode():
            expected = [blocks[i].input_layernorm(hs[i])[-1] for i in range(N_BLOCKS)]
        expected.append(hs[N_BLOCKS][-1])  # the final norm's output
        torch.testing.assert_close(acts.states[p], torch.stack(expected), atol=1e-5, rtol=1e-5)
    # It is a different quantity from the residual stream (except after the final norm).
    residual = extract_activations(model, tokenizer, PROMPTS, ExtractionSpec())
    assert not torch.allclose(residual.states[:, 1], acts.states[:, 1], atol=1e-3)
    torch.testing.assert_close(residual.states[:, -1], acts.states[:, -1])


@pytest.mark.parametrize("hidden_state", ["residual", "block_input_norm"])
def test_padding_and_batching_do_not_change_states(tiny, hidden_state: str) -> None:
    model, tokenizer = tiny
    one = extract_activations(
        model, tokenizer, PROMPTS, ExtractionSpec(batch_size=1, hidden_state=hidden_state)
    )
    mixed = extract_activations(
        model, tokenizer, PROMPTS, ExtractionSpec(batch_size=4, hidden_state=hidden_state)
    )
    # Lengths differ a lot, so the batch of 4 carries heavy left padding.
    assert max(one.n_tokens) > 3 * min(one.n_tokens)
    torch.testing.assert_close(one.states, mixed.states, atol=1e-5, rtol=1e-5)
    assert one.n_tokens == mixed.n_tokens


def test_results_come_back_in_prompt_order(tiny) -> None:
    model, tokenizer = tiny
    forward = extract_activations(model, tokenizer, PROMPTS, ExtractionSpec(batch_size=2))
    backward = extract_activations(model, tokenizer, PROMPTS[::-1], ExtractionSpec(batch_size=2))
    torch.testing.assert_close(forward.states, backward.states.flip(0))
    assert forward.n_tokens == backward.n_tokens[::-1]


def test_resolve_layers() -> None:
    assert resolve_layers("all", 4) == [0, 1, 2, 3, 4]
    assert resolve_layers([3, 0], 4) == [0, 3]
    assert resolve_layers([-1, -5, 1], 4) == [0, 1, 4]
    for bad in ([5], [-6]):
        with pytest.raises(SpecError, match=r"0\.\.4"):
            resolve_layers(bad, 4)
    with pytest.raises(SpecError, match="same layer"):
        resolve_layers([4, -1], 4)


def test_layer_selection_keeps_only_those_layers(tiny) -> None:
    model, tokenizer = tiny
    full = extract_activations(model, tokenizer, PROMPTS, ExtractionSpec())
    some = extract_activations(model, tokenizer, PROMPTS, ExtractionSpec(layers=[-1, 2, 0]))
    assert some.layers == [0, 2, 4]
    torch.testing.assert_close(some.states, full.states[:, [0, 2, 4]])
    with pytest.raises(SpecError, match="out of range"):
        extract_activations(model, tokenizer, PROMPTS, ExtractionSpec(layers=[7]))


def _count_calls(module: torch.nn.Module, counter: list[int]):
    return module.register_forward_hook(lambda *_: counter.append(1))


@pytest.mark.parametrize(
    ("layers", "hidden_state", "blocks_run"),
    [
        ([1], "residual", 1),  # the input of block 1 needs block 0 only
        ([0], "residual", 0),
        ([0, 2], "block_input_norm", 2),
        ([3], "residual", 3),
        ([-1], "residual", N_BLOCKS),  # after the final norm: the whole stack
        ("all", "block_input_norm", N_BLOCKS),
    ],
)
def test_forward_stops_after_the_last_requested_layer(
    tiny, layers, hidden_state: str, blocks_run: int
) -> None:
    model, tokenizer = tiny
    block_calls: list[int] = []
    head_calls: list[int] = []
    handles = [_count_calls(b, block_calls) for b in model.model.layers]
    handles.append(_count_calls(model.lm_head, head_calls))
    try:
        spec = ExtractionSpec(layers=layers, hidden_state=hidden_state, batch_size=2)
        extract_activations(model, tokenizer, PROMPTS, spec)
    finally:
        for h in handles:
            h.remove()
    n_batches = 3
    assert len(block_calls) == blocks_run * n_batches
    assert head_calls == []  # the LM head never runs
    # No hook of ours stays behind.
    assert all(not b._forward_pre_hooks for b in model.model.layers)


def test_prompt_longer_than_max_length_names_the_prompt(tiny) -> None:
    model, tokenizer = tiny
    n = len(tokenizer(PROMPTS[2])["input_ids"])
    spec = ExtractionSpec(max_length=n - 1)
    with pytest.raises(ExtractionError, match=rf"prompt 2 has {n} tokens.*max_length={n - 1}"):
        extract_activations(model, tokenizer, PROMPTS, spec)
    # Exactly at the limit is fine.
    extract_activations(model, tokenizer, PROMPTS[2:3], ExtractionSpec(max_length=n))


def test_progress_after_each_batch_and_cancellation_between_batches(tiny) -> None:
    model, tokenizer = tiny
    calls: list[tuple[int, int]] = []
    extract_activations(
        model,
        tokenizer,
        PROMPTS,
        ExtractionSpec(batch_size=2),
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls == [(2, 5), (4, 5), (5, 5)]

    calls.clear()
    with pytest.raises(JobCancelled):
        extract_activations(
            model,
            tokenizer,
            PROMPTS,
            ExtractionSpec(batch_size=2),
            progress=lambda d, t: calls.append((d, t)),
            should_stop=lambda: len(calls) >= 2,
        )
    assert calls == [(2, 5), (4, 5)]
    assert all(not b._forward_pre_hooks for b in model.model.layers)


def test_safetensors_round_trip_and_numpy_reader(tiny) -> None:
    model, tokenizer = tiny
    acts = extract_activations(model, tokenizer, PROMPTS, ExtractionSpec(layers=[0, 3, -1]))
    data = acts.to_safetensors({"condition": "icl-5"})
    back = Activations.from_safetensors(data)
    assert back.layers == [0, 3, 4] and back.n_tokens == acts.n_tokens
    torch.testing.assert_close(back.states, acts.states, atol=0, rtol=0)

    arrays = safetensors.numpy.load(data)
    assert set(arrays) == {"layer.0", "layer.3", "layer.4", "n_tokens", "read"}
    assert back.read == [(n - 1, n) for n in acts.n_tokens]  # position "last"
    assert arrays["layer.3"].shape == (5, 64) and arrays["layer.3"].dtype == np.float32
    np.testing.assert_array_equal(arrays["layer.3"], acts.states[:, 1].numpy())
    assert arrays["n_tokens"].dtype == np.int64
    assert arrays["n_tokens"].tolist() == acts.n_tokens


def test_safetensors_metadata(tiny, tmp_path: Path) -> None:
    model, tokenizer = tiny
    acts = extract_activations(model, tokenizer, PROMPTS[:2], ExtractionSpec(layers=[1]))
    path = tmp_path / "acts.safetensors"
    path.write_bytes(acts.to_safetensors({"condition": "zero-shot"}))
    with safetensors.safe_open(str(path), framework="np") as f:
        meta = f.metadata()
    assert meta == {"format": "reprlab.activations/1", "layers": "[1]", "condition": "zero-shot"}


def test_bfloat16_states_are_stored_as_float32(tiny) -> None:
    model, tokenizer = tiny
    acts = extract_activations(model, tokenizer, PROMPTS, ExtractionSpec(dtype="bfloat16"))
    assert acts.states.dtype == torch.bfloat16
    arrays = safetensors.numpy.load(acts.to_safetensors({}))
    assert arrays["layer.2"].dtype == np.float32
    np.testing.assert_array_equal(arrays["layer.2"], acts.states[:, 2].float().numpy())


def test_foreign_safetensors_file_is_rejected() -> None:
    data = safetensors.numpy.save({"x": np.zeros(3, dtype=np.float32)})
    with pytest.raises(ExtractionError, match="not a reprlab activations file"):
        Activations.from_safetensors(data)
    with pytest.raises(ExtractionError, match="not a safetensors file"):
        Activations.from_safetensors(b"garbage!")


def test_model_without_layers_is_refused_by_architecture(tiny) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    _, tokenizer = tiny
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=len(tokenizer)))
    with pytest.raises(ExtractionError, match="GPT2LMHeadModel"):
        extract_activations(gpt2, tokenizer, PROMPTS, ExtractionSpec())


def test_base_model_without_head_works_too(tiny) -> None:
    model, tokenizer = tiny
    full = extract_activations(model, tokenizer, PROMPTS, ExtractionSpec())
    body = extract_activations(model.model, tokenizer, PROMPTS, ExtractionSpec())
    torch.testing.assert_close(body.states, full.states)


def test_wrapped_model_is_unwrapped_to_its_decoder(tiny) -> None:
    """A peft (LoRA) wrapper, as the fine-tuning stage produces, extracts like its base model."""
    peft = pytest.importorskip("peft")
    model, tokenizer = tiny
    base = extract_activations(model, tokenizer, PROMPTS, ExtractionSpec(layers=[1, -1]))
    config = peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    wrapped = peft.get_peft_model(model, config).eval()
    try:
        # LoRA's B matrices start at zero, so the wrapped model computes the same function.
        lora = extract_activations(wrapped, tokenizer, PROMPTS, ExtractionSpec(layers=[1, -1]))
    finally:
        wrapped.unload()  # give the shared fixture model back without LoRA layers
    torch.testing.assert_close(lora.states, base.states, atol=1e-6, rtol=1e-6)


# --- study 3: span max-pooling and attention mass to spans -----------------------------------


def _study3_prompts(name: str = "reading_comprehension") -> list[Prompt]:
    """Zero-shot and 2-shot prompts mixed, so batches carry left padding of varied width."""
    d = load_dataset(BuiltinDataset(name=name, n_eval=4, n_train=8, seed=1))
    zero = build_prompts(d, ICLCondition(name="z", k=0), PromptSpec())
    two = build_prompts(d, ICLCondition(name="t", k=2, seed=3), PromptSpec())
    return [zero[0], two[1], zero[2], two[3], two[0]]


def _span_tokens(tokenizer: PreTrainedTokenizerBase, prompt: Prompt, name: str) -> list[int]:
    """The tokens of a span by the tokenizer's own char_to_token (independent of our code)."""
    enc = tokenizer(prompt.text)
    start, end = prompt.spans[name]
    return sorted({t for c in range(start, end) if (t := enc.char_to_token(c)) is not None})


@contextmanager
def _eager(model: torch.nn.Module):
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


def _hf_attentions(model, tokenizer, prompt: str) -> list[torch.Tensor]:
    """transformers' own attention weights of one unpadded prompt: per block [heads, seq, seq]."""
    ids = tokenizer(prompt, return_tensors="pt")
    with _eager(model), torch.inference_mode():
        out = model(**ids, output_attentions=True)
    return [a[0] for a in out.attentions]


@pytest.mark.parametrize("hidden_state", ["residual", "block_input_norm"])
def test_span_max_is_the_max_over_the_span_tokens(tiny, hidden_state: str) -> None:
    model, tokenizer = tiny
    prompts = _study3_prompts()
    spec = ExtractionSpec(position="span_max", span="irrelevant", batch_size=3,
                          hidden_state=hidden_state)  # fmt: skip
    acts = extract_activations(model, tokenizer, prompts, spec)
    last = extract_activations(model, tokenizer, [p.text for p in prompts],
                               ExtractionSpec(batch_size=3, hidden_state=hidden_state))  # fmt: skip
    blocks = model.model.layers
    for p, prompt in enumerate(prompts):
        tokens = _span_tokens(tokenizer, prompt, "irrelevant")
        assert 3 <= len(tokens) < acts.n_tokens[p] - 5
        hs = _hf_hidden_states(model, tokenizer, prompt.text)
        if hidden_state == "block_input_norm":
            with torch.inference_mode():
                hs = torch.stack([*(blocks[i].input_layernorm(hs[i]) for i in range(N_BLOCKS)),
                                  hs[N_BLOCKS]])  # fmt: skip
        expected = hs[:, tokens].amax(dim=1)
        torch.testing.assert_close(acts.states[p], expected, atol=1e-5, rtol=1e-5)
    assert acts.attention is None and acts.n_tokens == last.n_tokens
    assert not torch.allclose(acts.states, last.states)


def test_span_max_of_the_query_x_in_linear_regression(tiny) -> None:
    model, tokenizer = tiny
    prompts = _study3_prompts("linear_regression")
    spec = ExtractionSpec(position="span_max", span="query", batch_size=5)
    acts = extract_activations(model, tokenizer, prompts, spec)
    for p, prompt in enumerate(prompts):
        tokens = _span_tokens(tokenizer, prompt, "query")
        hs = _hf_hidden_states(model, tokenizer, prompt.text)
        torch.testing.assert_close(acts.states[p], hs[:, tokens].amax(dim=1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("per_head", [True, False])
def test_attention_mass_matches_transformers_eager_attentions(tiny, per_head: bool) -> None:
    model, tokenizer = tiny
    prompts = _study3_prompts()
    spec = ExtractionSpec(attention=AttentionSpec(per_head=per_head), batch_size=3)
    assert model.config._attn_implementation == "sdpa"
    acts = extract_activations(model, tokenizer, prompts, spec)
    assert model.config._attn_implementation == "sdpa"  # restored after the pass
    n_heads = model.config.num_attention_heads
    shape = (
        (len(prompts), N_BLOCKS + 1, n_heads, 2) if per_head else (len(prompts), N_BLOCKS + 1, 2)
    )
    assert acts.attention is not None and acts.attention.shape == shape
    assert acts.attention.dtype == torch.float32
    assert acts.attention_spans == ["relevant", "irrelevant"]
    assert torch.isnan(acts.attention[:, 0]).all()  # the embeddings have no attention
    for p, prompt in enumerate(prompts):
        attentions = _hf_attentions(model, tokenizer, prompt.text)
        tokens = [_span_tokens(tokenizer, prompt, s) for s in ("relevant", "irrelevant")]
        # Layer i >= 1 is block i - 1: its last-token row summed over each span's tokens.
        expected = torch.stack([
            torch.stack([attentions[i - 1][:, -1, t].sum(-1) for t in tokens], dim=-1)
            for i in range(1, N_BLOCKS + 1)
        ])  # [layers, heads, spans]  # fmt: skip
        if not per_head:
            expected = expected.mean(dim=1)
        torch.testing.assert_close(acts.attention[p, 1:], expected, atol=1e-5, rtol=1e-5)
    # The same pass keeps the hidden states; eager and SDPA agree on them.
    plain = extract_activations(model, tokenizer, prompts, ExtractionSpec(batch_size=3))
    torch.testing.assert_close(acts.states, plain.states, atol=1e-5, rtol=1e-5)


def test_attention_follows_the_layer_selection_and_the_early_stop(tiny) -> None:
    model, tokenizer = tiny
    prompts = _study3_prompts()
    full = extract_activations(model, tokenizer, prompts, ExtractionSpec(attention=AttentionSpec()))
    hooks = _hook_counts(model)
    calls: list[int] = []
    handle = _count_calls(model.model.layers[2], calls)
    try:
        some = extract_activations(model, tokenizer, prompts,
                                   ExtractionSpec(layers=[2, 0], attention=AttentionSpec(),
                                                  batch_size=5))  # fmt: skip
    finally:
        handle.remove()
    assert calls == []  # residual layer 2 is the input of block 2: blocks 0 and 1 run only
    assert some.layers == [0, 2] and full.attention is not None and some.attention is not None
    torch.testing.assert_close(some.attention, full.attention[:, [0, 2]], equal_nan=True)
    assert _hook_counts(model) == hooks  # ours are gone (transformers keeps its own)


def test_attention_implementation_is_restored_after_a_cancelled_pass(tiny) -> None:
    model, tokenizer = tiny
    spec = ExtractionSpec(attention=AttentionSpec(), batch_size=2)
    hooks = _hook_counts(model)

    def eager_now() -> bool:  # asked before each batch, inside the eager pass
        return model.config._attn_implementation == "eager"

    with pytest.raises(JobCancelled):
        extract_activations(model, tokenizer, _study3_prompts(), spec, should_stop=eager_now)
    assert model.config._attn_implementation == "sdpa"
    assert _hook_counts(model) == hooks


def _hook_counts(model: torch.nn.Module) -> list[tuple[int, int]]:
    return [
        (len(b._forward_pre_hooks), len(b.self_attn._forward_hooks)) for b in model.model.layers
    ]


def test_missing_or_bad_spans_name_the_prompt_item_and_span(tiny) -> None:
    model, tokenizer = tiny
    regression = _study3_prompts("linear_regression")
    with pytest.raises(ExtractionError, match=r"prompt 0 \(item 0\) has no span 'irrelevant' "
                                              r"\(its spans: 'query', 'relevant'\)"):  # fmt: skip
        extract_activations(model, tokenizer, regression, ExtractionSpec(attention=AttentionSpec()))
    with pytest.raises(ExtractionError, match="prompt 1 has no span 'relevant' .*none"):
        extract_activations(model, tokenizer, [regression[0], "bare text"],
                            ExtractionSpec(position="span_max"))  # fmt: skip
    outside = Prompt("short", 7, (), {"relevant": (2, 9)})
    with pytest.raises(
        ExtractionError, match=r"span 'relevant' of prompt 0 \(item 7\) is \[2, 9\)"
    ):
        extract_activations(model, tokenizer, [outside], ExtractionSpec(position="span_max"))
    assert model.config._attn_implementation == "sdpa"
    # Position 'last' without attention reads no spans: bare strings are fine.
    extract_activations(model, tokenizer, ["bare text"], ExtractionSpec(span="absent"))


def test_spans_need_a_fast_tokenizer(tiny) -> None:
    from transformers import ByT5Tokenizer

    model, _ = tiny
    slow = ByT5Tokenizer()  # a real python tokenizer: no offset mapping
    with pytest.raises(ExtractionError, match="ByT5Tokenizer is a slow tokenizer") as err:
        extract_activations(model, slow, _study3_prompts(), ExtractionSpec(position="span_max"))
    assert "fast tokenizer" in (err.value.hint or "")


@pytest.mark.parametrize("per_head", [True, False])
def test_safetensors_round_trip_with_attention(tiny, per_head: bool, tmp_path: Path) -> None:
    model, tokenizer = tiny
    spec = ExtractionSpec(layers=[0, 3, -1], position="span_max",
                          attention=AttentionSpec(spans=["irrelevant", "relevant"],
                                                  per_head=per_head))  # fmt: skip
    acts = extract_activations(model, tokenizer, _study3_prompts(), spec)
    data = acts.to_safetensors({"condition": "icl-2"})
    back = Activations.from_safetensors(data)
    assert back.layers == [0, 3, 4] and back.attention_spans == ["irrelevant", "relevant"]
    assert back.attention is not None and acts.attention is not None
    torch.testing.assert_close(back.attention, acts.attention, atol=0, rtol=0, equal_nan=True)
    torch.testing.assert_close(back.states, acts.states, atol=0, rtol=0)
    arrays = safetensors.numpy.load(data)
    assert set(arrays) == {"layer.0", "layer.3", "layer.4", "n_tokens", "read", "attention"}
    assert arrays["attention"].shape == tuple(acts.attention.shape)
    path = tmp_path / "acts.safetensors"
    path.write_bytes(data)
    with safetensors.safe_open(str(path), framework="np") as f:
        assert json.loads(f.metadata()["attention_spans"]) == ["irrelevant", "relevant"]
    # Without attention the file is what it always was.
    plain = extract_activations(model, tokenizer, PROMPTS, ExtractionSpec(layers=[1]))
    assert Activations.from_safetensors(plain.to_safetensors({})).attention is None
