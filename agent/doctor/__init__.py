"""`vllm-agent doctor`: host and deployment findings, and the classifier table (diagnose) that turns
an engine's last lines into one line an operator can act on; the launcher uses it too.
"""
