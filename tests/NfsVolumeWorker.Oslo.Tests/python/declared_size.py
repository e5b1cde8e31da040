#!/usr/bin/python3
"""A volume whose raw file is smaller than the size Cinder's database declares (64 MiB on disk, 1 GiB declared),
driven by Cinder's own cinder.volume.rpcapi.VolumeAPI: the snapshot's overlay gets the declared size, as Cinder's
driver makes it ("%dG" % snapshot.volume.size), so initialize_connection's size check passes before and after the
snapshot is deleted. Exit 0 and a last line PASS on success."""
import argparse
import os

import cinder_client as cc

p = argparse.ArgumentParser()
p.add_argument("--url", required=True)
p.add_argument("--exchange", default="cinder")
p.add_argument("--host", default="hostA@nfs")
p.add_argument("--dir", required=True)
p.add_argument("--db", required=True)
a = p.parse_args()

conf = cc.setup(a.url, a.exchange, a.db)
from cinder.volume import rpcapi  # noqa: E402  (after setup)

collector = cc.Collector(conf)
api = rpcapi.VolumeAPI()
ctxt = cc.context()
host = a.host + "#nfs"
d = a.dir

vol = cc.new_volume(ctxt, host, size=1, display_name="declared")
api.create_volume(ctxt, vol, {"volume_properties": {"size": 1}}, {}, allow_reschedule=True)
collector.wait("volume.create.end", "volume_id", vol.id)
base = os.path.join(d, f"volume-{vol.id}")
os.truncate(base, 64 << 20)  # an imported or hand-made volume: the file is smaller than declared
cc.check(cc.qemu_info(base)["virtual-size"] == 64 << 20, "the raw file is 64 MiB, declared 1 GiB")

s1 = cc.new_snapshot(ctxt, vol, display_name="s1")
api.create_snapshot(ctxt, vol, s1)
n = collector.wait("snapshot.create.end", "snapshot_id", s1.id)
cc.check(n["payload"]["status"] == "available", "snapshot.create.end, available")
overlay = cc.qemu_info(os.path.join(d, f"volume-{vol.id}.{s1.id}"))
cc.check(overlay["virtual-size"] == cc.GiB, f"the overlay has the declared size, 1 GiB, as Cinder's driver makes it ({overlay['virtual-size']})")

vol.provider_location = None
conn = api.initialize_connection(ctxt, vol, {"host": "compute-1", "initiator": None})
cc.check(conn["data"]["name"] == f"volume-{vol.id}.{s1.id}" and conn["data"]["format"] == "qcow2",
         f"initialize_connection passes Cinder's size check on the snapshotted volume ({conn['data']['name']})")

s1.volume = vol
api.delete_snapshot(ctxt, s1)
collector.wait("snapshot.delete.end", "snapshot_id", s1.id)
cc.check(collector.none("snapshot.delete.error", "snapshot_id", s1.id), "no snapshot.delete.error")
cc.check(cc.qemu_info(base)["virtual-size"] == cc.GiB, "after the merge the base has the declared size")
conn = api.initialize_connection(ctxt, vol, {"host": "compute-1", "initiator": None})
cc.check(conn["data"]["name"] == f"volume-{vol.id}" and conn["data"]["format"] == "raw", "initialize_connection passes after the merge")

api.delete_volume(ctxt, vol)
collector.wait("volume.delete.end", "volume_id", vol.id)
cc.check(cc.listing(d) == [], f"share empty: {cc.listing(d)}")
collector.stop()
cc.log("PASS")
