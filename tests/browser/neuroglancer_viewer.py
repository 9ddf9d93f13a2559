"""Serve PyPI's built Neuroglancer client (the `neuroglancer` package's
Python viewer server) with a state whose layers are neurocube's
precomputed volumes. Prints the viewer's URL, then serves until killed.

Usage: python3 neuroglancer_viewer.py BASE_URL DATASET [image|both|synapses]
"""
import sys
import time

import neuroglancer

base, ds = sys.argv[1], sys.argv[2]
layers = sys.argv[3] if len(sys.argv) > 3 else "both"
neuroglancer.set_server_bind_address("127.0.0.1", 0)
viewer = neuroglancer.Viewer()
with viewer.txn() as s:
    s.dimensions = neuroglancer.CoordinateSpace(names=["x", "y", "z"], units="nm", scales=[4, 4, 40])
    s.position = [256, 256, 16]
    s.cross_section_scale = 1
    s.layers["image"] = neuroglancer.ImageLayer(source=f"precomputed://{base}/precomputed/{ds}/image")
    if layers == "both":
        s.layers["segmentation"] = neuroglancer.SegmentationLayer(
            source=f"precomputed://{base}/precomputed/{ds}/segmentation")
    if layers == "synapses":
        s.layers["synapses"] = neuroglancer.AnnotationLayer(
            source=f"precomputed://{base}/precomputed/{ds}/annotations/synapses")
    s.layout = "xy"
print(viewer.get_viewer_url(), flush=True)
while True:
    time.sleep(3600)
