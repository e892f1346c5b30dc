"""What a deployment becomes for systemd and for vLLM: its unit drop-in (dropin), the engine's
command line (engine_command), and the one escaping function for every value that reaches a unit
file or an sd_notify message (escape).
"""
