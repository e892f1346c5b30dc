"""An example vllm-agent plugin (see plugin.py for what it registers)."""
