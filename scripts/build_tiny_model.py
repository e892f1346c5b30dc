#!/usr/bin/env python3
"""Build a random tiny Llama that real vLLM can serve, with no download.

    <vllm-venv>/bin/python scripts/build_tiny_model.py OUT_DIR [--seed 0]

Run it with the vLLM venv's python (it needs torch, transformers and tokenizers). It makes, from
the seed alone and in a few seconds:

- a byte-level BPE tokenizer trained with `tokenizers` on the small corpus below, saved through
  PreTrainedTokenizerFast with <s>/</s>/<unk>/<pad> and a Jinja chat template (so
  /v1/chat/completions works);
- a LlamaForCausalLM with random bf16 weights, saved with save_pretrained as safetensors
  (head size 64: vLLM's CPU attention backend rejects 16).

Idempotent: when OUT_DIR already holds a complete build of the same seed and builder version
(its build-stamp.json), nothing is done. The build happens in OUT_DIR.tmp and is renamed into
place, so OUT_DIR is never half-written; OUT_DIR.lock serialises concurrent builders. Progress
goes to stderr; stdout gets one line, the absolute OUT_DIR.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import shutil
import sys
from pathlib import Path

BUILDER_VERSION = 2
STAMP = "build-stamp.json"
REQUIRED_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
)

BOS, EOS, UNK, PAD = "<s>", "</s>", "<unk>", "<pad>"
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]
VOCAB_SIZE = 512
MAX_POSITIONS = 512

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

CORPUS = """\
The quick brown fox jumps over the lazy dog. A model is served by an engine behind an API server.
Once upon a time there was a tiny language model that lived on a small machine with two cores.
It answered every question with random words, because nobody had ever trained it.
Hello, world! How are you today? I am fine, thank you. What is the weather like?
The agent starts a unit, waits until the health check answers, and then sends a first request.
Tokens are counted, latency is measured, and metrics are exported for Prometheus to scrape.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 100 256 1024 2048 3.14159 42.
Systemd restarts a service when it fails, unless the start limit has been hit.
The server listens on the loopback address only, port eighteen thousand seven hundred.
Ask a question and the assistant will answer. The user says hello. The system is ready.
In the beginning the weights were random; in the end they were still random, but well served.
Functions, classes, modules, packages: def main(): return 0 if ok else 1
"""


def corpus_lines() -> list[str]:
    lines = [line for line in CORPUS.splitlines() if line.strip()]
    # A few deterministic variations so BPE finds more merges than one pass would.
    return lines + [line.lower() for line in lines] + [line.upper() for line in lines]


def read_stamp(out: Path) -> dict | None:
    try:
        return json.loads((out / STAMP).read_text())
    except (OSError, ValueError):
        return None


def is_complete(out: Path, seed: int) -> bool:
    stamp = read_stamp(out)
    return (
        isinstance(stamp, dict)
        and stamp.get("seed") == seed
        and stamp.get("builder_version") == BUILDER_VERSION
        and all((out / name).is_file() for name in REQUIRED_FILES)
    )


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=1,
        special_tokens=[UNK, BOS, EOS, PAD, *ROLE_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus_lines(), trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        additional_special_tokens=ROLE_TOKENS,
        chat_template=CHAT_TEMPLATE,
        model_max_length=MAX_POSITIONS,
        clean_up_tokenization_spaces=False,
    )


def build(out: Path, seed: int) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        dtype="bfloat16",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    stamp = {
        "builder_version": BUILDER_VERSION,
        "seed": seed,
        "vocab_size": config.vocab_size,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    (tmp / STAMP).write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n")
    # save_pretrained writes model.safetensors 0600; a service user other than the builder must read it.
    for path in tmp.iterdir():
        path.chmod(0o644)
    tmp.chmod(0o755)
    missing = [name for name in REQUIRED_FILES if not (tmp / name).is_file()]
    if missing:
        raise SystemExit(f"build_tiny_model: incomplete build, missing {missing}")
    if out.exists():
        old = out.with_name(out.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = args.out_dir.absolute()
    if is_complete(out, args.seed):
        print(f"build_tiny_model: {out} already built (seed {args.seed})", file=sys.stderr)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        # Concurrent builders (parallel test workers) take turns; the second one finds it built.
        with open(out.with_name(out.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if is_complete(out, args.seed):
                print(f"build_tiny_model: {out} already built (seed {args.seed})", file=sys.stderr)
            else:
                build(out, args.seed)
                print(f"build_tiny_model: built {out} (seed {args.seed})", file=sys.stderr)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
