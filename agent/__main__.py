"""python -m vllm_agent"""

from .cli.main import entry

entry()
