"""lakecache's AI library: components a flow runs as tasks, or a notebook calls.

Each component reads a folder or a commit (``DATASET@REF``: the site's ready
cache under a lease, else the lake) and writes an output folder, and is
runnable as ``lakecache lib COMPONENT`` and ``python -m lakecache.library
COMPONENT`` (``--help`` explains each):

- :mod:`~lakecache.library.split`: train/val/test lists by patient, seeded.
- :mod:`~lakecache.library.prepare`: resized images or raw uint8 tensors with
  their labels, a derived dataset whose lineage names its source commit.
- :mod:`~lakecache.library.image_classifier`: ``train`` and ``evaluate`` a
  torchvision ResNet, multi-label (NIH ChestX-ray14) or single-label (class
  folders), tracked.
- :mod:`~lakecache.library.pick_best`: the best of several runs by a metric.

``flows/xray.yaml`` wires them into the chest X-ray scenario. Data layouts
are read as downloaded (:mod:`~lakecache.library.layout`).
"""
