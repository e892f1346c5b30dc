"""Write the man page and the bash completion from the command's own parser, so neither can
drift from --help. Usage: python gendocs.py OUTDIR (run with the packaged venv's python)."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, date, datetime
from pathlib import Path

from vllm_agent import __version__
from vllm_agent.cli.main import build_parser


def _roff(text: str) -> str:
    escaped = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line.startswith((".", "'")) else line for line in escaped.splitlines())


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return [flag for action in parser._actions for flag in action.option_strings]


def _options_text(parser: argparse.ArgumentParser) -> str:
    text = parser.format_help().split("options:", 1)[-1]
    if parser.epilog:
        text = text.split(parser.epilog.strip().splitlines()[0], 1)[0]
    return "\n".join(line.strip() for line in text.strip().splitlines())


def man_page(parser: argparse.ArgumentParser) -> str:
    # Reproducible builds pin the date with SOURCE_DATE_EPOCH.
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    today = (datetime.fromtimestamp(int(epoch), UTC).date() if epoch else date.today()).isoformat()
    out = [
        f'.TH VLLM-AGENT 1 "{today}" "vllm-agent {__version__}" "User Commands"',
        ".SH NAME",
        "vllm\\-agent \\- " + _roff(parser.description or ""),
        ".SH SYNOPSIS",
        ".nf",
        _roff(parser.format_usage().replace("usage: ", "")),
        ".fi",
        ".SH OPTIONS",
        ".nf",
        _roff(_options_text(parser)),
        ".fi",
        ".SH COMMANDS",
    ]
    for name, sub in _subcommands(parser).items():
        out += [f".SS {_roff(name)}", _roff(sub.description or ""), ".nf", _roff(sub.format_usage().strip()), ".fi"]
    out += [".SH FILES", ".nf", _roff(parser.epilog or ""), ".fi"]
    return "\n".join(out) + "\n"


def bash_completion(parser: argparse.ArgumentParser) -> str:
    subs = _subcommands(parser)
    cases = "\n".join(f'        {name}) opts="{" ".join(_options(sub))}" ;;' for name, sub in subs.items())
    return f"""# bash completion for vllm-agent (generated from its parser)
_vllm_agent() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} command="" word opts
    for word in "${{COMP_WORDS[@]:1:COMP_CWORD-1}}"; do
        case "$word" in -*) ;; *) command=$word; break ;; esac
    done
    if [ -z "$command" ]; then
        opts="{" ".join(_options(parser))} {" ".join(subs)}"
    else
        case "$command" in
{cases}
        esac
        if [[ "$cur" != -* ]]; then
            opts="$opts $(ls /etc/vllm-agent/models.d 2>/dev/null | sed -n 's/\\.toml$//p')"
        fi
    fi
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}}
complete -F _vllm_agent vllm-agent
"""


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    parser = build_parser()
    (out / "vllm-agent.1").write_text(man_page(parser))
    (out / "vllm-agent.bash").write_text(bash_completion(parser))


if __name__ == "__main__":
    main()
