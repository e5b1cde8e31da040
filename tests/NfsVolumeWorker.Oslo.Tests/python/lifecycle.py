#!/usr/bin/python3
"""The full snapshot lifecycle driven by Cinder's own cinder.volume.rpcapi.VolumeAPI (what cinder-api and
cinder-scheduler send), observed by a stock oslo.messaging notification listener, checked on disk against
what Cinder's NFS driver leaves. Exit 0 and a last line PASS on success."""
import argparse
import json
import os
import subprocess

import cinder_client as cc

p = argparse.ArgumentParser()
p.add_argument("--url", required=True)
p.add_argument("--exchange", default="cinder")
p.add_argument("--host", default="hostA@nfs")
p.add_argument("--share", default="127.0.0.1:/export")
p.add_argument("--dir", required=True)
p.add_argument("--db", required=True)
p.add_argument("--version-cap", default=None)
p.add_argument("--result", required=True)
a = p.parse_args()

conf = cc.setup(a.url, a.exchange, a.db, a.version_cap)
from cinder.volume import rpcapi  # noqa: E402  (after setup)

collector = cc.Collector(conf)
api = rpcapi.VolumeAPI()
legacy = a.version_cap is not None and not api.client.can_send_version("3.6")
cc.log(f"client version cap {a.version_cap}: {'legacy' if legacy else 'current'} routing")
ctxt = cc.context()
host = a.host + "#nfs"
d = a.dir

# 1. create a volume (as the scheduler does), no provider_location: the worker decides the share.
vol = cc.new_volume(ctxt, host, size=1, display_name="lifecycle")
api.create_volume(ctxt, vol, {"volume_properties": {"size": 1}}, {}, allow_reschedule=True)
n = collector.wait("volume.create.end", "volume_id", vol.id)
cc.check(n["publisher_id"] == f"volume.{host}", f"volume.create.end published by volume.<volume.host> ({n['publisher_id']})")
cc.check(collector.items[0]["event_type"] == "volume.create.start", "volume.create.start came first")
base = os.path.join(d, f"volume-{vol.id}")
cc.check(os.path.exists(base) and cc.qemu_info(base)["format"] == "raw", "volume-<id> exists, raw")
cc.check(cc.qemu_info(base)["virtual-size"] == cc.GiB, "volume is 1 GiB")
subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x11 0 1M", base], check=True, capture_output=True)

# 2. two snapshots (create_snapshot carries the Snapshot only: volume id and size, no share)
s1 = cc.new_snapshot(ctxt, vol, display_name="s1")
api.create_snapshot(ctxt, vol, s1)
n = collector.wait("snapshot.create.end", "snapshot_id", s1.id)
cc.check(n["publisher_id"] == f"snapshot.{a.host}" and n["payload"]["status"] == "available", "snapshot.create.end from snapshot.<host@backend>, status available")
for field in ["tenant_id", "user_id", "availability_zone", "volume_id", "volume_size", "snapshot_id", "display_name", "created_at", "status", "deleted", "metadata"]:
    if field not in n["payload"]:
        cc.fail(f"snapshot payload lacks {field}: {n['payload']}")
cc.check(n["payload"]["tenant_id"] == "project-1" and n["payload"]["display_name"] == "s1", "snapshot payload carries Cinder's fields")
active = cc.qemu_info(os.path.join(d, f"volume-{vol.id}.{s1.id}"))
subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x22 1M 1M", os.path.join(d, f"volume-{vol.id}.{s1.id}")], check=True, capture_output=True)
s2 = cc.new_snapshot(ctxt, vol, display_name="s2")
api.create_snapshot(ctxt, vol, s2)
collector.wait("snapshot.create.end", "snapshot_id", s2.id)
info = cc.read_info(d, vol.id)
cc.check(info == {"active": f"volume-{vol.id}.{s2.id}", s1.id: f"volume-{vol.id}.{s1.id}", s2.id: f"volume-{vol.id}.{s2.id}"}, ".info after two snapshots as Cinder writes it")
top = cc.qemu_info(os.path.join(d, f"volume-{vol.id}.{s2.id}"))
cc.check(top["format"] == "qcow2" and top["backing-filename"] == f"volume-{vol.id}.{s1.id}", "newest overlay backs onto the older one (relative name)")
with open(os.path.join(d, f"volume-{vol.id}.info")) as f:
    text = f.read()
cc.check(text == json.dumps(info, indent=1, sort_keys=True), ".info formatted like json.dump(indent=1, sort_keys=True)")
subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x33 2M 1M", os.path.join(d, f"volume-{vol.id}.{s2.id}")], check=True, capture_output=True)

# 3. delete the middle snapshot (cinder-api sends the Snapshot with its volume loaded)
s1.volume = vol
api.delete_snapshot(ctxt, s1)
n = collector.wait("snapshot.delete.end", "snapshot_id", s1.id)
cc.check(collector.none("snapshot.delete.error", "snapshot_id", s1.id), "no snapshot.delete.error")
info = cc.read_info(d, vol.id)
cc.check(info == {"active": f"volume-{vol.id}.{s2.id}", s2.id: f"volume-{vol.id}.{s2.id}"}, ".info after deleting the middle snapshot")
cc.check(not os.path.exists(os.path.join(d, f"volume-{vol.id}.{s1.id}")), "the middle overlay is gone")
top = cc.qemu_info(os.path.join(d, f"volume-{vol.id}.{s2.id}"))
cc.check(top["backing-filename"] == f"volume-{vol.id}" and top.get("backing-filename-format") == "raw", "active overlay rebased onto the raw base")

# 4. clone a new volume from the newest snapshot (create_volume with snapshot_id; no source volume given)
clone = cc.new_volume(ctxt, host, size=1, display_name="clone", snapshot_id=s2.id)
api.create_volume(ctxt, clone, {"snapshot_id": s2.id}, {}, allow_reschedule=True)
n = collector.wait("volume.create.end", "volume_id", clone.id)
cc.check(n["payload"]["snapshot_id"] == s2.id, "volume.create.end of the clone names the snapshot")
cpath = os.path.join(d, f"volume-{clone.id}")
ci = cc.qemu_info(cpath)
cc.check(ci["format"] == "raw" and "backing-filename" not in ci and ci["virtual-size"] == cc.GiB, "clone is an independent raw 1 GiB file")
with open(cpath, "rb") as f:
    data = f.read(3 << 20)
cc.check(data[:1 << 20] == b"\x11" * (1 << 20) and data[1 << 20:2 << 20] == b"\x22" * (1 << 20), "clone holds the data of the snapshot")
cc.check(data[2 << 20:] == b"\x00" * (1 << 20), "clone does not hold data written after the snapshot")

# 5. delete the last snapshot
s2.volume = vol
api.delete_snapshot(ctxt, s2)
collector.wait("snapshot.delete.end", "snapshot_id", s2.id)
info = cc.read_info(d, vol.id)
cc.check(info in (None, {"active": f"volume-{vol.id}"}), f".info after the last snapshot: {info}")
cc.check(cc.listing(d) == sorted([f"volume-{vol.id}", f"volume-{vol.id}.info", f"volume-{clone.id}"]) or
         cc.listing(d) == sorted([f"volume-{vol.id}", f"volume-{clone.id}"]), f"only the base, its .info and the clone remain: {cc.listing(d)}")
bi = cc.qemu_info(base)
cc.check(bi["format"] == "raw", "base still raw")
with open(base, "rb") as f:
    data = f.read(3 << 20)
cc.check(data == b"\x11" * (1 << 20) + b"\x22" * (1 << 20) + b"\x33" * (1 << 20), "all data merged into the base")

# 6. calls: initialize_connection, get_capabilities, terminate_connection
vol.provider_location = None
conn = api.initialize_connection(ctxt, vol, {"host": "compute-1", "initiator": None})
cc.check(conn["driver_volume_type"] == "nfs", "initialize_connection: driver_volume_type nfs")
cc.check(conn["data"]["export"] == a.share and conn["data"]["name"] == f"volume-{vol.id}" and conn["data"]["format"] == "raw",
         f"initialize_connection: export, active file name, format ({conn})")
cc.check(conn["data"]["access_mode"] == "rw" and conn["data"]["encrypted"] is False and "mount_point_base" in conn, "initialize_connection: access_mode, encrypted, mount_point_base")
caps = api.get_capabilities(ctxt, a.host + "#nfs", False)
cc.check(caps["storage_protocol"] == "nfs" and caps["volume_backend_name"] == a.host.split("@")[1], f"get_capabilities answered ({caps['volume_backend_name']})")
api.terminate_connection(ctxt, vol, {"host": "compute-1"}, force=False)
cc.log("ok: terminate_connection answered")

# 7. extend, revert (>= 3.15 only), delete
api.extend_volume(ctxt, vol, 2, None)
n = collector.wait("volume.resize.end", "volume_id", vol.id)
cc.check(n["payload"]["size"] == 2 and cc.qemu_info(base)["virtual-size"] == 2 * cc.GiB, "extend_volume: 2 GiB, volume.resize.end size 2")
vol.size = 2
if not legacy:
    s3 = cc.new_snapshot(ctxt, vol, display_name="s3")
    api.create_snapshot(ctxt, vol, s3)
    collector.wait("snapshot.create.end", "snapshot_id", s3.id)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x44 0 1M", os.path.join(d, f"volume-{vol.id}.{s3.id}")], check=True, capture_output=True)
    api.revert_to_snapshot(ctxt, vol, s3)
    collector.wait("volume.revert.end", "volume_id", vol.id)
    out = subprocess.run(["qemu-io", "-f", "qcow2", "-c", "read -P 0x11 0 1M", os.path.join(d, f"volume-{vol.id}.{s3.id}")], capture_output=True, text=True).stdout
    cc.check("Pattern verification failed" not in out and "read 1048576" in out, "revert_to_snapshot discarded the write after the snapshot")
    s3.volume = vol
    api.delete_snapshot(ctxt, s3)
    collector.wait("snapshot.delete.end", "snapshot_id", s3.id)
api.delete_volume(ctxt, clone)
collector.wait("volume.delete.end", "volume_id", clone.id)
cc.check(not os.path.exists(cpath), "delete_volume removed the clone")
api.delete_volume(ctxt, vol)
collector.wait("volume.delete.end", "volume_id", vol.id)
cc.check(cc.listing(d) == [], f"share empty after deleting both volumes: {cc.listing(d)}")

ts = collector.items[-1]["timestamp"]
cc.check(len(ts) in (19, 26) and ts[10] == " ", f"notification timestamps in oslo's format ({ts})")
errors = [n for n in collector.items if n["priority"] == "ERROR"]
cc.check(errors == [], "no error notifications")
with open(a.result, "w") as f:
    json.dump({"notifications": collector.items, "legacy": legacy}, f, indent=1)
collector.stop()
cc.log("PASS")
