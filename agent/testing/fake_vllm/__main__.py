#!/usr/bin/env python3
"""Start the fake vLLM server, the way units and tests do.

``python path/to/fake_vllm`` (this directory: what deployments' ``[engine] command`` and the tests
run), this file as an executable (its shebang, like a unit's ``ExecStart=``), or
``python -m vllm_agent.testing.fake_vllm`` (that one imports the project's ``vllm_agent.testing``
first, so it starts slower). With ``--fake-run-engine-core`` alone, how the API server starts its
child, the process is the ``VLLM::EngineCore`` instead.
"""

import importlib
import os
import sys

if __package__:  # python -m vllm_agent.testing.fake_vllm
    package = __package__
else:
    # Run by path: the directory is sys.path[0], where its modules would shadow others of the same
    # name. Take it off and load the directory as the package "fake_vllm" (standard library only:
    # neither the project nor this directory's parent goes on the path).
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0] or os.curdir) == here:
        del sys.path[0]
    spec = importlib.util.spec_from_file_location(
        "fake_vllm", os.path.join(here, "__init__.py"), submodule_search_locations=[here]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["fake_vllm"] = module
    spec.loader.exec_module(module)
    package = "fake_vllm"

engine_core = importlib.import_module(f"{package}.engine_core")
if sys.argv[1:] == [engine_core.ENGINE_CORE_FLAG]:
    engine_core.main()  # the child: the HTTP side is never imported
else:
    importlib.import_module(f"{package}.api_server").main()
