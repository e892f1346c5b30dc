"""The vllm-agent command: argument parsing (main), the verbs' bodies (commands) and the commands
that are modules of their own (logs, init, pull, verify, models, the fast status path).
"""
