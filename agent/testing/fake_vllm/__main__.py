#!/usr/bin/env python3
"""``python agent/testing/fake_vllm`` (the package directory) runs the fake vLLM server."""

if __package__:
    from . import api_server
else:
    import api_server  # the directory is sys.path[0]

api_server.main()
