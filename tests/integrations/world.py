"""The world of the data-access tests: a small image dataset, and a ready cache of it."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers import write

from lakecache.cache.service import CacheService
from lakecache.data.dataset import Dataset
from lakecache.data.hub import Hub
from lakecache.settings import Settings

CLASSES = ("Edema", "Hernia", "Mass")
PER_CLASS = 8


def png(index: int) -> bytes:
    """A 6x4 PNG whose colour encodes ``index``: a decoded image names its file."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (6, 4), (index, 255 - index, 7)).save(buf, format="PNG")
    return buf.getvalue()


def to_tensor(image: Any) -> Any:
    """A decoded RGB image as a CHW uint8 tensor, as torchvision's PILToTensor makes it,
    without torchvision: a spawned DataLoader worker unpickling that transform imports
    torchvision, whose ops import torch._dynamo (seconds of CPU in every worker)."""
    import numpy as np
    import torch

    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def index_of(image: object) -> int:
    """The index a decoded image (PIL or a CHW tensor) was made from."""
    import torch

    if isinstance(image, torch.Tensor):
        return int(image[0, 0, 0])
    return int(image.getpixel((0, 0))[0])  # type: ignore[attr-defined]


def make_images(root: Path, *, corrupt: bool = False) -> dict[str, bytes]:
    """Images in one folder per class, a labels CSV beside them, and a text file.

    ``corrupt`` adds ``Edema/broken.png``: committed intact, but not a decodable PNG.
    """
    files: dict[str, bytes] = {}
    rows = ["path,label"]
    for c, name in enumerate(CLASSES):
        for i in range(PER_CLASS):
            index = c * PER_CLASS + i
            rel = f"images/{name}/{index:03d}.png"
            files[rel] = png(index)
            rows.append(f"{name}/{index:03d}.png,{'sick' if index % 2 else 'well'}")
    files["images/labels.csv"] = ("\n".join(rows) + "\n").encode()
    files["docs/readme.txt"] = b"chest x-rays, small\n"
    if corrupt:
        files["images/Edema/broken.png"] = b"\x89PNG\r\n\x1a\n" + b"not really a png" * 20
    for rel, data in files.items():
        write(root, rel, data, age=10)
    return files


@dataclass
class Lake:
    """The dataset ``xray`` committed once (tag ``v1``): its settings, hub and files."""

    kind: str
    settings: Settings
    hub: Hub
    files: dict[str, bytes]

    @property
    def images(self) -> dict[str, bytes]:
        return {p: d for p, d in self.files.items() if p.endswith(".png")}


def commit_images(settings: Settings, tmp_path: Path, kind: str, corrupt: bool) -> Iterator[Lake]:
    """Commit the images as xray (tagged v1) and yield the lake; its hub is closed after."""
    hub = Hub(settings)
    files = make_images(tmp_path / "src", corrupt=corrupt)
    ds = Dataset.create("xray", hub=hub)
    ds.commit(tmp_path / "src", message="first import")
    ds.tag("v1")
    try:
        yield Lake(kind, settings, hub, files)
    finally:
        hub.close()


def add_cache(lake: Lake, root: Path, *, ttl: int = 86400, ref: str = "v1") -> int:
    """Site ``onprem`` with a volume at ``root`` (mounted here), and a ready cache of xray@ref."""
    svc = CacheService(lake.hub)
    topology = svc.topology
    now = svc.clock.now()
    root.mkdir(parents=True, exist_ok=True)
    topology.add_site("onprem", "GPU cluster", now)
    topology.add_volume("onprem-nfs", "onprem", str(root), 10**9, ttl, now)
    rec = svc.request("xray", ref, site="onprem")
    return svc.ensure_ready(rec).id
