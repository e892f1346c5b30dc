"""`vllm-agent run`: reconcile the units with the config directory and the desired state, watch
systemd and the GPUs, serve the local status API and /metrics, and keep each deployment's history.
"""
