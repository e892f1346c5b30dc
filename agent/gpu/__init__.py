"""GPUs as the agent sees them: which backends work here, who runs on each device, the
``vllm-agent gpus`` report and the per-device metrics. Vendor I/O stays in the backend plugins
(vllm_agent_plugins.gpu_nvml, gpu_rocm) behind the GpuBackend Protocol of plugin_api."""
