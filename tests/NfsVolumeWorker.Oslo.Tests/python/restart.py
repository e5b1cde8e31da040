#!/usr/bin/python3
"""A create_volume cast whose outcome is observed by a later worker. Phase "cast": send it (the C# test makes
sure the worker that accepts it stops before running it). Phase "listen": a stock notification listener must
receive exactly one volume.create.end (and one .start) for that volume. Last line PASS."""
import argparse
import time

import cinder_client as cc

p = argparse.ArgumentParser()
p.add_argument("--url", required=True)
p.add_argument("--exchange", default="cinder")
p.add_argument("--host", default="hostA@nfs")
p.add_argument("--db", required=True)
p.add_argument("--volume-id", required=True)
p.add_argument("--phase", choices=["cast", "listen"], required=True)
p.add_argument("--settle", type=float, default=8.0)
a = p.parse_args()

conf = cc.setup(a.url, a.exchange, a.db)
from cinder.volume import rpcapi  # noqa: E402  (after setup)

host = a.host + "#nfs"
if a.phase == "cast":
    ctxt = cc.context()
    vol = cc.new_volume(ctxt, host, size=1, display_name="survives-restart")
    vol.id = a.volume_id
    vol.obj_reset_changes()
    rpcapi.VolumeAPI().create_volume(ctxt, vol, {"volume_properties": {"size": 1}}, {}, allow_reschedule=True)
    cc.log(f"ok: create_volume cast for {vol.id}")
else:
    collector = cc.Collector(conf)
    n = collector.wait("volume.create.end", "volume_id", a.volume_id, timeout=90)
    cc.check(n["payload"]["status"] == "available" and n["publisher_id"] == f"volume.{host}",
             f"volume.create.end: status available, from volume.<volume.host> ({n['publisher_id']})")
    cc.check(n["payload"]["display_name"] == "survives-restart" and n["payload"]["tenant_id"] == "project-1",
             "the payload carries the request's details, kept on the share across the restart")
    time.sleep(a.settle)  # a duplicate would arrive within this
    with collector.lock:
        ends = [x for x in collector.items if x["event_type"] == "volume.create.end" and x["payload"].get("volume_id") == a.volume_id]
        starts = [x for x in collector.items if x["event_type"] == "volume.create.start" and x["payload"].get("volume_id") == a.volume_id]
        others = [x["event_type"] for x in collector.items if x["payload"].get("volume_id") == a.volume_id and x not in ends + starts]
    cc.check(len(ends) == 1, f"exactly one volume.create.end ({len(ends)})")
    cc.check(len(starts) == 1, f"exactly one volume.create.start ({len(starts)})")
    cc.check(others == [], f"no other notification for the volume ({others})")
    collector.stop()
cc.log("PASS")
