#!/usr/bin/python3
"""Bad input through the real clients: failure replies to calls, error notifications for casts, nothing
touched on the share; duplicates (same _unique_id) run once; the worker goes on. Last line PASS."""
import argparse
import json
import time
import uuid

import cinder_client as cc

p = argparse.ArgumentParser()
p.add_argument("--url", required=True)
p.add_argument("--exchange", default="cinder")
p.add_argument("--host", default="hostA@nfs")
p.add_argument("--dir", required=True)
p.add_argument("--db", required=True)
p.add_argument("--result", required=True)
a = p.parse_args()

conf = cc.setup(a.url, a.exchange, a.db)
import kombu  # noqa: E402
import oslo_messaging  # noqa: E402
from cinder import objects  # noqa: E402
from cinder.volume import rpcapi  # noqa: E402

collector = cc.Collector(conf)
api = rpcapi.VolumeAPI()
ctxt = cc.context()
host = a.host + "#nfs"
d = a.dir
server = a.host.split("@")[0]

# A volume to work against.
vol = cc.new_volume(ctxt, host, size=1, display_name="target")
api.create_volume(ctxt, vol, {}, {}, allow_reschedule=True)
collector.wait("volume.create.end", "volume_id", vol.id)
before = cc.listing(d)
with open(f"{d}/volume-{vol.id}", "rb") as f:
    content_before = f.read()


def expect_remote_error(fn, cls, what):
    try:
        fn()
    except Exception as e:  # noqa: BLE001  (the client raises the remote class or RemoteError)
        name = (getattr(e, "exc_type", None) or type(e).__name__).removesuffix("_Remote")
        cc.check(name == cls, f"{what}: failure reply {name}")
        return e
    cc.fail(f"{what}: no failure reply")


def expect_error_code(e, code, what):
    """The worker's error code travels with the failure: at the end of the message for every client (a RemoteError
    too) and, on Cinder's own exceptions (rebuilt from cinder.exception), as kwarg error_code."""
    cc.check(f"[error_code: {code}]" in str(e), f"{what}: message carries error code {code}: {str(e).splitlines()[0]}")
    if getattr(e, "exc_type", None) is None:  # rebuilt as Cinder's class, not a RemoteError
        cc.check(e.kwargs.get("error_code") == code, f"{what}: kwarg error_code {e.kwargs.get('error_code')}")
        cc.check(isinstance(e.kwargs.get("code"), int), f"{what}: Cinder's HTTP code kwarg left alone")


# Calls with bad input: failure replies in oslo's format.
wrong = cc.new_volume(ctxt, host, size=2)
wrong.id = vol.id
e = expect_remote_error(lambda: api.initialize_connection(ctxt, wrong, {"host": "c"}), "InvalidVolume", "initialize_connection with a size Cinder does not have")
expect_error_code(e, "SizeMismatch", "initialize_connection with a size Cinder does not have")
missing = cc.new_volume(ctxt, host, size=1)
e = expect_remote_error(lambda: api.initialize_connection(ctxt, missing, {"host": "c"}), "InvalidInput", "initialize_connection of a volume no share holds")
expect_error_code(e, "InvalidRequest", "initialize_connection of a volume no share holds")
transport = oslo_messaging.get_rpc_transport(conf)
client = oslo_messaging.get_rpc_client(transport, oslo_messaging.Target(topic=f"cinder-volume.{a.host}", server=server, version="3.0"), timeout=20)
e = expect_remote_error(lambda: client.call({}, "frobnicate", x=1), "NoSuchMethod", "unknown method")
expect_error_code(e, "UnsupportedRequest", "unknown method")
expect_remote_error(lambda: client.prepare(version="4.0").call({}, "get_capabilities", discover=False), "UnsupportedVersion", "unsupported version")
expect_remote_error(lambda: client.prepare(version="3.99").call({}, "get_capabilities", discover=False), "UnsupportedVersion", "newer minor version than served")
caps = client.call({}, "get_capabilities", discover=False)
cc.check(caps["storage_protocol"] == "nfs", "the worker goes on answering calls")

# Casts with bad input: error notifications at ERROR priority.
client.cast({}, "frobnicate", x=1)
n = collector.wait("volume.rpc.error", "method", "frobnicate")
cc.check(n["priority"] == "ERROR", "unknown cast method: volume.rpc.error at ERROR priority")
cc.check(n["payload"].get("error_code") == "UnsupportedRequest", f"volume.rpc.error carries error_code {n['payload'].get('error_code')}")
ghost = cc.new_volume(ctxt, host, size=1)
s = cc.new_snapshot(ctxt, ghost, display_name="ghost")
api.create_snapshot(ctxt, ghost, s)
n = collector.wait("snapshot.create.error", "snapshot_id", s.id)
cc.check(n["priority"] == "ERROR" and n["payload"]["status"] == "error", "snapshot of a volume no share holds: snapshot.create.error")
cc.check(n["payload"].get("error_code") == "InvalidRequest", f"refused by the adapter: error_code {n['payload'].get('error_code')}")
enc = objects.Volume(context=ctxt, id=vol.id, size=1, host=host, status="available", attach_status="detached",
                     encryption_key_id=str(uuid.uuid4()), cluster_name=None, project_id="project-1", user_id="user-1")
s2 = cc.new_snapshot(ctxt, enc, with_volume=True, display_name="encrypted")
api.create_snapshot(ctxt, enc, s2)
n = collector.wait("snapshot.create.error", "snapshot_id", s2.id)
cc.check(n["priority"] == "ERROR", "snapshot of an encrypted volume refused by the pipeline: snapshot.create.error")
# The code of the worker's CommandFailed travels in the .error notification of the command it ended.
cc.check(n["payload"].get("error_code") == "VolumeEncrypted", f"refused by the engine: error_code {n['payload'].get('error_code')}")
client.cast({}, "create_volume", volume={"not": "an object"}, request_spec={}, filter_properties={}, allow_reschedule=True)
n = collector.wait("volume.create.error", "method", "create_volume")
cc.check(n["priority"] == "ERROR" and "error" in n["payload"], "create_volume with a volume that is not a versioned object: volume.create.error")

# Duplicates: the same message (same _unique_id) delivered twice runs once.
dup = cc.new_volume(ctxt, host, size=1, display_name="dup")
unique = uuid.uuid4().hex
inner = {"method": "create_volume", "version": "3.0", "_unique_id": unique,
         "args": {"volume": dup.obj_to_primitive(), "request_spec": {}, "filter_properties": {}, "allow_reschedule": True},
         "_context_user_id": "user-1", "_context_project_id": "project-1", "_context_auth_token": cc.SECRET_TOKEN}
body = json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(inner)})
with kombu.Connection(a.url.replace("rabbit://", "amqp://")) as conn:
    producer = conn.Producer()
    for _ in range(2):
        producer.publish(body, exchange=a.exchange, routing_key=f"cinder-volume.{a.host}.{server}",
                         content_type="application/json", content_encoding="utf-8", delivery_mode=2)
collector.wait("volume.create.end", "volume_id", dup.id)
time.sleep(3)
starts = [n for n in collector.items if n["event_type"] == "volume.create.start" and n["payload"]["volume_id"] == dup.id]
ends = [n for n in collector.items if n["event_type"] == "volume.create.end" and n["payload"]["volume_id"] == dup.id]
cc.check(len(starts) == 1 and len(ends) == 1, f"duplicate delivery ran once ({len(starts)} start, {len(ends)} end)")

# Nothing touched by the bad requests.
after = [x for x in cc.listing(d) if x != f"volume-{dup.id}"]
cc.check(after == before, f"share unchanged by bad input: {after}")
with open(f"{d}/volume-{vol.id}", "rb") as f:
    cc.check(f.read() == content_before, "the target volume's content unchanged")
api.delete_volume(ctxt, vol)
collector.wait("volume.delete.end", "volume_id", vol.id)
api.delete_volume(ctxt, dup)
collector.wait("volume.delete.end", "volume_id", dup.id)
with open(a.result, "w") as f:
    json.dump({"notifications": collector.items}, f, indent=1)
collector.stop()
cc.log("PASS")
