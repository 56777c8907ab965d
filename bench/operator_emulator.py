"""kmock's Kubernetes emulator as a process of its own, for the operator benchmark.

Usage: python bench/operator_emulator.py OBJECTS.json
OBJECTS.json is a list of [resource, name, body] in namespace `ns1`. The emulator prints its URL
on stdout's first line and serves until stdin closes. A separate process keeps the emulator's CPU
(and its GIL) out of the operator's measurements.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import kmock
from common import ROOT  # noqa: F401  (puts the repository root on sys.path)

from tests.support import kube as h


async def serve(objects_path: str) -> None:
    objects = json.loads(Path(objects_path).read_text())
    async with kmock.KubernetesEmulator() as emulator, kmock.Server(emulator):
        h.declare_resources(emulator)
        for resource, name, body in objects:
            emulator.objects[resource, h.NAMESPACE, name] = body
        print(str(emulator.url).rstrip("/"), flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
