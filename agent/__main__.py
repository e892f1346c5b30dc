"""python -m vllm_agent"""

from .cli import main

raise SystemExit(main())
