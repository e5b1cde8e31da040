#!/usr/bin/python3
"""A real oslo.messaging RPC server (another cinder-volume backend, hostB@nfs) and a real notifier start on
the broker the worker already declared its topology on, with the same oslo options: their declarations
(control exchange, shared cinder-volume queue, notifications.info) must not fail with PRECONDITION_FAILED.
Proven by calls answered by both servers and a notification received. Last line PASS."""
import argparse
import threading

import cinder_client as cc
import oslo_messaging

p = argparse.ArgumentParser()
p.add_argument("--url", required=True)
p.add_argument("--exchange", default="cinder")
p.add_argument("--host", default="hostA@nfs")
p.add_argument("--db", required=True)
p.add_argument("--durable", action="store_true")
p.add_argument("--quorum", action="store_true")
a = p.parse_args()

conf = cc.setup(a.url, a.exchange, a.db)
if a.durable:
    conf.set_override("amqp_durable_queues", True, group="oslo_messaging_rabbit")
if a.quorum:
    conf.set_override("rabbit_quorum_queue", True, group="oslo_messaging_rabbit")


class Endpoint:
    target = oslo_messaging.Target(version="3.18")

    def whoami(self, ctxt):
        return "hostB"


transport = oslo_messaging.get_rpc_transport(conf)
servers = []
for target in [oslo_messaging.Target(topic="cinder-volume", server="hostB@nfs"),
               oslo_messaging.Target(topic="cinder-volume.hostB@nfs", server="hostB")]:
    s = oslo_messaging.get_rpc_server(transport, target, [Endpoint()], executor="threading")
    s.start()
    servers.append(s)

client = oslo_messaging.get_rpc_client(transport, oslo_messaging.Target(topic="cinder-volume.hostB@nfs", server="hostB", version="3.0"), timeout=15)
cc.check(client.call({}, "whoami") == "hostB", "a real oslo RPC server declared its topology next to the worker's and answers")
w = oslo_messaging.get_rpc_client(transport, oslo_messaging.Target(topic=f"cinder-volume.{a.host}", server=a.host.split("@")[0], version="3.0"), timeout=15)
cc.check(w.call({}, "get_capabilities", discover=False)["storage_protocol"] == "nfs", "the worker still answers")

collector = cc.Collector(conf)
notifier = oslo_messaging.Notifier(oslo_messaging.get_notification_transport(conf), publisher_id="volume.hostB@nfs", driver="messagingv2", topics=["notifications"])
notifier.info({}, "volume.probe", {"volume_id": "probe"})
collector.wait("volume.probe", "volume_id", "probe", timeout=15)
cc.log("ok: a real notifier and listener share notifications.info with the worker")
for s in servers:
    s.stop()
    s.wait()
collector.stop()
cc.log("PASS")
