#!/usr/bin/python3
"""Cinder's VolumeAPI.publish_service_capabilities (a fanout cast to every cinder-volume) makes the worker cast
update_service_capabilities to the schedulers, as a cinder-volume does: a real oslo.messaging RPC server on the
scheduler's topic receives it, and the timestamp parses the way Cinder's SchedulerManager parses it. Twice, so that
the second cast finds the scheduler's fanout exchange declared already. Last line PASS."""
import argparse
import queue
from datetime import datetime

import cinder_client as cc
import oslo_messaging

p = argparse.ArgumentParser()
p.add_argument("--url", required=True)
p.add_argument("--exchange", default="cinder")
p.add_argument("--host", default="hostA@nfs")
p.add_argument("--db", required=True)
a = p.parse_args()

conf = cc.setup(a.url, a.exchange, a.db)
from cinder.scheduler import rpcapi as scheduler_rpcapi  # noqa: E402  (after setup)
from cinder.volume import rpcapi  # noqa: E402
from oslo_utils import timeutils  # noqa: E402

received = queue.Queue()


class Scheduler:
    """The signature of cinder.scheduler.manager.SchedulerManager.update_service_capabilities."""
    target = oslo_messaging.Target(version=scheduler_rpcapi.SchedulerAPI.RPC_API_VERSION)

    def update_service_capabilities(self, context, service_name=None, host=None, capabilities=None,
                                    cluster_name=None, timestamp=None, **kwargs):
        received.put({"service_name": service_name, "host": host, "capabilities": capabilities,
                      "cluster_name": cluster_name, "timestamp": timestamp})


transport = oslo_messaging.get_rpc_transport(conf)
server = oslo_messaging.get_rpc_server(transport, oslo_messaging.Target(topic="cinder-scheduler", server="sched1"),
                                       [Scheduler()], executor="threading")
server.start()
api = rpcapi.VolumeAPI()
for attempt in (1, 2):
    api.publish_service_capabilities(cc.context())
    try:
        got = received.get(timeout=20)
    except queue.Empty:
        cc.fail(f"cast {attempt}: no update_service_capabilities reached the scheduler within 20 s")
    cc.check(got["service_name"] == "volume" and got["host"] == a.host,
             f"cast {attempt}: update_service_capabilities from volume service {got['host']}")
    cc.check(got["capabilities"].get("storage_protocol") == "nfs", f"cast {attempt}: the worker's capabilities ({got['capabilities'].get('storage_protocol')})")
    datetime.strptime(got["timestamp"], timeutils.PERFECT_TIME_FORMAT)
    cc.log(f"ok: cast {attempt}: timestamp {got['timestamp']} parses as Cinder's scheduler parses it")
server.stop()
server.wait()
cc.log("PASS")
