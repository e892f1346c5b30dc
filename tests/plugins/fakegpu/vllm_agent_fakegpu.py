"""A test-only plugin: the real ``nvml`` backend over the fake pynvml, devices from a JSON file.

Registered by entry point like any third-party plugin (scripts/setup installs it into the dev
venv). It offers nothing unless ``VLLM_AGENT_FAKE_GPUS`` names a description file:

    {
      "backend": "fakegpu",                  # the backend's name (default "fakegpu")
      "fail": {"nvmlInit": 12},              # NVML error codes per call: 12 = library not found
      "xid_file": "xids",                    # lines "DEVICE XID" (index or UUID) become Xid events
      "devices": [                           # or "count": N for N default H100s
        {"name": "NVIDIA A100-SXM4-40GB", "total": 42949672960, "used": 0,
         "processes": [[4242, 1073741824]], "temperature": 40, "ecc_volatile": 0}
      ]
    }

Device keys are the fields of vllm_agent.testing.pynvml_fake's FakeGpu (``mig``: a list of FakeMig
fields). Relative paths are relative to the file. The file is read again whenever it changes, so a
test can move memory or add processes between two commands.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vllm_agent import hookimpl
from vllm_agent.plugin_api import AgentSettings, GpuBackend
from vllm_agent.testing import pynvml_fake as fake
from vllm_agent_plugins.gpu_nvml import NvmlBackend

ENV = "VLLM_AGENT_FAKE_GPUS"


class FileNvml(fake.FakeNvml):
    """FakeNvml whose devices and failures come from the description file, re-read on change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        super().__init__(0)
        self._reload()

    def _reload(self) -> None:
        stat = self.path.stat()
        if (stat.st_mtime_ns, stat.st_size) == self._stamp:
            return
        description = json.loads(self.path.read_text())
        self._stamp = (stat.st_mtime_ns, stat.st_size)
        self.fail = dict(description.get("fail", {}))
        xid_file = description.get("xid_file")
        self.xid_file = None if xid_file is None else self.path.parent / xid_file
        if "devices" in description:
            self.gpus = [_gpu(item) for item in description["devices"]]
        else:
            self.gpus = [fake.FakeGpu() for _ in range(int(description.get("count", 1)))]

    def nvmlInit(self) -> None:
        self._reload()
        super().nvmlInit()


def _gpu(item: dict[str, Any]) -> Any:
    values = dict(item)
    values["processes"] = [tuple(process) for process in values.get("processes", [])]
    if values.get("mig") is not None:
        values["mig"] = [fake.FakeMig(**mig) for mig in values["mig"]]
    return fake.FakeGpu(**values)


@hookimpl
def agent_gpu_backends(settings: AgentSettings) -> Sequence[GpuBackend]:
    path = os.environ.get(ENV)
    if not path:
        return []
    name = json.loads(Path(path).read_text()).get("backend", "fakegpu")
    return [NvmlBackend(FileNvml(Path(path)), name=name)]
