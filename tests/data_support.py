"""Builders behind the data suite's fixtures (``tiny_lm``, ``synthetic_data`` in conftest.py).

``build_tiny_lm`` makes a random 2-layer Llama with a word-level chat tokenizer: real transformers
code paths (chat template, left padding, generate, PEFT) in milliseconds, offline.
``build_synthetic_data`` writes a miniature copy of the shared public-data folder with the real
file layout and column names, so loaders and importers are tested without ../shared/data.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

TINY_CORPUS = [
    "the answer is A B C D E yes no true false",
    "what is the capital of france paris london berlin rome",
    "question answer option letter correct explanation because",
    "0 1 2 3 4 5 6 7 8 9 10 100 #### . , ? ! : ( )",
    "solve the problem step by step then give the final number",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_lm() -> tuple[Any, Any]:
    """``(model, tokenizer)``: a fresh random LlamaForCausalLM (hidden 64, 2 layers) in eval mode and
    a PreTrainedTokenizerFast with pad/eos/unk tokens and a ChatML-like chat template."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]
    raw = Tokenizer(models.WordLevel(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.train_from_iterator(TINY_CORPUS, trainers.WordLevelTrainer(special_tokens=specials))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        chat_template=CHAT_TEMPLATE,
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(config).eval(), tokenizer


MIXTRAL, GPT4 = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"
MMLU_ROWS = {
    "astronomy": [
        ("What is the closest star to Earth?", "Sirius", "The Sun", "Vega", "None", 1),
        ("How many planets orbit the Sun?", "7", "8", "9", "10", 1),
        ("Which planet is largest?", "Mars", "Venus", "Jupiter", "Earth", 2),
    ],
    "virology": [
        ("Viruses are made of", "cells", "protein and nucleic acid", "lipids only", "sugar", 1),
        ("Which is a virus?", "E. coli", "influenza", "yeast", "algae", 1),
    ],
}
GSM8K_TEST = [
    {"question": "Tom has 3 apples and buys 4 more. How many apples?", "answer": "3 + 4 = 7\n#### 7"},
    {"question": "A pen costs $1,200 for 1000 pens. Cost of all?", "answer": "#### 1,200"},
]
ARC_ROWS = [
    {"id": "Q1", "question": "Which is hot?", "answerKey": "B"}
    | {"choices": {"text": ["ice", "fire", "snow", "rain"], "label": ["A", "B", "C", "D"]}},
    {"id": "Q2", "question": "Pick two.", "answerKey": "2"}
    | {"choices": {"text": ["1", "2", "3"], "label": ["1", "2", "3"]}},
]
BOOLQ_ROWS = [
    {"prompt": "passage: Paris is in France.\nquestion: {}", "subject": "is paris in france"}
    | {"target_new": {"str": "True"}},
    {
        "prompt": "passage: Ice is cold.\nquestion: {}",
        "subject": "is ice hot",
        "target_new": {"str": "False"},
    },
]
ROUTERBENCH_MODELS = ["gpt-4-1106-preview", "claude-v2"]
ROUTERBENCH_HEADER = [
    "",
    "sample_id",
    "prompt",
    "eval_name",
    *ROUTERBENCH_MODELS,
    *(f"{m}|model_response" for m in ROUTERBENCH_MODELS),
    *(f"{m}|total_cost" for m in ROUTERBENCH_MODELS),
    "oracle_model_to_route_to",
]
HOT, COLD = "Which is hot?\nA) ice\nB) fire\nAnswer:", "Which is cold?\nA) ice\nB) fire\nAnswer:"
# Row 1 repeats sample val.1 with the prompt sent twice and gpt-4's cell empty, as in the real file.
ROUTERBENCH_ROWS = [
    [
        "0",
        "arc-challenge.val.1",
        repr([HOT]),
        "arc-challenge",
        "1.0",
        "",
        "['B']",
        "['A']",
        "0.005",
        "0.004",
        "x",
    ],
    [
        "1",
        "arc-challenge.val.1",
        repr([HOT, HOT]),
        "arc-challenge",
        "",
        "0.0",
        "['B']",
        "['A']",
        "0.01",
        "0.008",
        "x",
    ],
    [
        "2",
        "arc-challenge.val.2",
        repr([COLD]),
        "arc-challenge",
        "1.0",
        "1.0",
        "['A\\n']",
        "['A']",
        "0.005",
        "",
        "x",
    ],
]


def _write_csv(path: Path, header: list[str], rows: list[Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def build_synthetic_data(root: Path) -> Path:
    """Write the miniature data folder under ``root`` and return ``root``."""
    for variant in ("Easy", "Challenge"):
        for split in ("train", "validation"):
            rows = [{**r, "id": f"{r['id']}-{variant}-{split}"} for r in ARC_ROWS]
            _write_jsonl(root / "arc" / f"ARC-{variant}-{split}.jsonl", rows)
    _write_jsonl(root / "boolq" / "validation_with_passage.jsonl", BOOLQ_ROWS)
    mmlu_header = ["question", "choice0", "choice1", "choice2", "choice3", "answer"]
    for subject, rows in MMLU_ROWS.items():
        _write_csv(root / "mmlu" / "test" / f"{subject}_test.csv", mmlu_header, rows)
        # RouteLLM's prompt format; pandas turned the option "None" into "nan" in the real logs.
        prompts = [
            f"{q}\nA. {a}\nB. {b}\nC. {c}\nD. {d}\nAnswer:".replace("None", "nan")
            for q, a, b, c, d, _ in rows
        ]
        logged = [(p, i % 2 == 0, True) for i, p in enumerate(prompts)]
        _write_csv(
            root / "routellm_evals" / "mmlu" / "responses" / f"mmlu_{subject}.csv",
            ["prompt", MIXTRAL, GPT4],
            logged,
        )
    _write_jsonl(root / "gsm8k" / "test.jsonl", GSM8K_TEST)
    _write_jsonl(root / "gsm8k" / "train.jsonl", GSM8K_TEST[:1])
    gsm_header = ["prompt", MIXTRAL, GPT4, f"{MIXTRAL}_response", f"{GPT4}_response"]
    gsm_rows = [(g["question"], "True", "False", "7\n#### 7", "8") for g in GSM8K_TEST]
    _write_csv(root / "routellm_evals" / "gsm8k" / "gsm8k_responses.csv", gsm_header, gsm_rows)
    contaminated = {
        "train_prompt": "x",
        "eval_prompt": GSM8K_TEST[1]["question"],
        "train_idx": 0,
        "eval_idx": 1,
    }
    _write_jsonl(root / "routellm_evals" / "gsm8k" / "contaminated_prompts.jsonl", [contaminated])
    _write_csv(root / "routerbench" / "arc_challenge_train.csv", ROUTERBENCH_HEADER, ROUTERBENCH_ROWS)
    write_entityquestions(root)
    return root


EQ_TEMPLATES = {
    "P36": "What is the capital of [X]?",
    "P276": "Where is [X] located?",
    "P17": "Which country is [X] located in?",
}
EQ_ROWS = {
    "P36": [("France", ["Paris"]), ("Japan", ["Tokyo"])],
    "P276": [("Louvre", ["Paris"])],
    "P17": [("Lyon", ["France"]), ("Nice", ["France"]), ("Osaka", ["Japan"])],  # France: a country 4 times
}


def write_entityquestions(root: Path) -> Path:
    """A miniature EntityQuestions folder (three relations, the same rows in train and dev)."""
    folder = root / "entityquestions"
    (folder / "relation_query_templates.json").parent.mkdir(parents=True, exist_ok=True)
    (folder / "relation_query_templates.json").write_text(json.dumps(EQ_TEMPLATES), encoding="utf-8")
    for relation, rows in EQ_ROWS.items():
        for split in ("train", "dev"):
            data = [{"question": EQ_TEMPLATES[relation].replace("[X]", e), "answers": a} for e, a in rows]
            path = folder / split / f"{relation}.{split}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(data), encoding="utf-8")
    return root
