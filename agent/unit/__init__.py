"""What runs inside vllm@NAME: the launcher (resolve the model, check the port, start the engine,
wait for health and the post-start tests), the engine process, supervision after ready, health
checks and sd_notify. A unit needs none of the daemon to start, serve and heal.
"""
