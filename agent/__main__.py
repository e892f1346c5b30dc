"""python -m vllm_agent"""

from .cli.main import main

raise SystemExit(main())
