"""Shared set-up for the interop scripts: the real oslo.messaging and Cinder client code (Debian packages,
/usr/bin/python3), a throw-away sqlite database, a notification listener that collects what arrives."""
import json
import os
import subprocess
import sys
import threading
import time
import uuid

try:
    from oslo_config import cfg
    import oslo_messaging
    from oslo_messaging._metrics import client as _metrics_client  # noqa: F401  (registers its options)
    from cinder import context as cinder_context
    from cinder import objects
    from cinder import rpc
    from cinder.db import migration
except ImportError as e:  # never skip: fail loudly and say how to fix it
    print(f"MISSING PYTHON PACKAGE: {e}. Install with: apt-get install -y python3-oslo.messaging python3-cinder",
          file=sys.stderr)
    sys.exit(3)

SECRET_TOKEN = "gAAAAAB-SECRET-AUTH-TOKEN-must-never-be-logged"
GiB = 1 << 30


def log(msg):
    print(msg, flush=True)


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr, flush=True)
    os._exit(1)


def setup(url, exchange, db_path, version_cap=None):
    objects.register_all()
    conf = cfg.CONF
    import cinder.common.config  # noqa: F401  (Cinder's own options)
    from oslo_db import options as db_options
    from oslo_messaging import transport as om_transport
    from oslo_messaging.notify import notifier as om_notifier
    conf.register_opts(om_transport._transport_opts)
    conf.register_opts(om_notifier._notifier_opts, group="oslo_messaging_notifications")
    db_options.set_defaults(conf, connection="sqlite:///" + db_path)
    conf([], project="cinder", default_config_files=[])
    conf.set_override("transport_url", url)
    conf.set_override("control_exchange", exchange)
    conf.set_override("connection", "sqlite:///" + db_path, group="database")
    conf.set_override("driver", ["messagingv2"], group="oslo_messaging_notifications")
    conf.set_override("metrics_thread_stop_timeout", 1, group="oslo_messaging_metrics")
    migration.db_sync()
    rpc.init(conf)
    if version_cap:
        rpc.LAST_RPC_VERSIONS["cinder-volume"] = version_cap
    return conf


def context():
    return cinder_context.RequestContext(user_id="user-1", project_id="project-1", auth_token=SECRET_TOKEN,
                                         is_admin=True, roles=["admin"])


class Collector:
    """A stock oslo.messaging notification listener on topic 'notifications' (info and error)."""

    def __init__(self, conf):
        self.items = []
        self.lock = threading.Condition()
        transport = oslo_messaging.get_notification_transport(conf)
        targets = [oslo_messaging.Target(topic="notifications")]
        self.listener = oslo_messaging.get_notification_listener(transport, targets, [self], executor="threading")
        self.listener.start()

    def _add(self, priority, publisher_id, event_type, payload, metadata):
        with self.lock:
            self.items.append({"priority": priority, "publisher_id": publisher_id, "event_type": event_type,
                               "payload": payload, "timestamp": metadata.get("timestamp")})
            self.lock.notify_all()

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        self._add("INFO", publisher_id, event_type, payload, metadata)

    def error(self, ctxt, publisher_id, event_type, payload, metadata):
        self._add("ERROR", publisher_id, event_type, payload, metadata)

    def wait(self, event_type, key, value, timeout=60):
        deadline = time.time() + timeout
        with self.lock:
            while True:
                for n in self.items:
                    if n["event_type"] == event_type and n["payload"].get(key) == value:
                        return n
                left = deadline - time.time()
                if left <= 0:
                    seen = [(n["event_type"], n["payload"].get(key)) for n in self.items]
                    fail(f"no {event_type} with {key}={value} within {timeout} s; seen: {seen}")
                self.lock.wait(left)

    def none(self, event_type, key, value):
        with self.lock:
            return not any(n["event_type"] == event_type and n["payload"].get(key) == value for n in self.items)

    def stop(self):
        self.listener.stop()
        self.listener.wait()


def qemu_info(path):
    out = subprocess.run(["qemu-img", "info", "--output=json", "--force-share", path], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def read_info(directory, volume_id):
    path = os.path.join(directory, f"volume-{volume_id}.info")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def listing(directory):
    return sorted(n for n in os.listdir(directory) if not n.startswith("."))


def check(condition, message):
    if not condition:
        fail(message)
    log("ok: " + message)


def new_volume(ctxt, host, size=1, **kw):
    v = objects.Volume(context=ctxt, id=str(uuid.uuid4()), size=size, host=host, status="creating",
                       attach_status="detached", project_id=ctxt.project_id, user_id=ctxt.user_id,
                       display_name=kw.pop("display_name", "vol"), availability_zone="nova", cluster_name=None,
                       encryption_key_id=None, **kw)
    v.obj_reset_changes()
    return v


def new_snapshot(ctxt, volume, with_volume=False, **kw):
    s = objects.Snapshot(context=ctxt, id=str(uuid.uuid4()), volume_id=volume.id, volume_size=volume.size,
                         status="creating", project_id=ctxt.project_id, user_id=ctxt.user_id,
                         display_name=kw.pop("display_name", "snap"), **kw)
    if with_volume:
        s.volume = volume
    s.obj_reset_changes()
    return s
