"""Drives Cinder's own NFS driver code (python3-cinder) on a local directory, offline.

Only what needs a running OpenStack is stubbed: the configuration object (plain attributes), the
volume/snapshot objects (plain attributes, no database) and nothing else: qemu-img, the .info file
handling, the backing-file checks and the locking are Cinder's code, run with oslo's processutils.

usage: python3 cinder_driver.py '<json request>'   ->  one JSON object on stdout
"""
import json
import os
import sys
import types

# Cinder runs `qemu-img info` under prlimit with a 1 GiB address space; glibc's per-thread malloc arenas make what
# qemu-img needs grow with the machine's load (its I/O threads), which failed the worker's own capped calls in a
# busy CI run. The worker sets this for its calls; the oracle gets it too, so that the tests' load cannot fail it.
os.environ["MALLOC_ARENA_MAX"] = "1"

from oslo_concurrency import processutils
from oslo_config import cfg

from cinder import coordination
from cinder import objects
objects.register_all()  # the driver modules' type annotations name cinder.objects.Volume

from cinder.volume.drivers import nfs
from cinder.volume.drivers import remotefs  # noqa: F401  (the code under test)


class FakeConfiguration(object):
    """cinder.volume.configuration.Configuration without oslo.config groups: every option is an attribute."""

    def __init__(self, mount_point_base):
        self.nfs_shares_config = None
        self.nfs_sparsed_volumes = True
        self.nfs_qcow2_volumes = False
        self.nfs_mount_point_base = mount_point_base
        self.nfs_mount_options = None
        self.nfs_mount_attempts = 1
        self.nfs_snapshot_support = True
        self.nas_secure_file_permissions = 'true'
        self.nas_secure_file_operations = 'false'
        self.nas_host = None
        self.nas_share_path = None
        self.nas_mount_options = None
        self.volume_dd_blocksize = '1M'
        self.max_over_subscription_ratio = 1.0
        self.reserved_percentage = 0
        self.volume_backend_name = 'nfs'
        self.backend_name = 'nfs'
        self.config_group = 'nfs'
        self.image_volume_cache_enabled = False
        self.volume_clear = 'zero'
        self.volume_clear_size = 0
        self.volume_clear_ionice = None
        self.target_helper = 'fake'
        self.target_protocol = 'iscsi'

    def append_config_values(self, _values):
        pass

    def safe_get(self, name):
        return getattr(self, name, None)


def make_driver(mount_point_base, lock_dir):
    cfg.CONF([], project='cinder', default_config_files=[])
    # Cinder's per-volume lock (coordination.synchronized): the file backend, as on a single host.
    cfg.CONF.set_override('backend_url', 'file://' + lock_dir, 'coordination')
    cfg.CONF.set_override('lock_path', lock_dir, 'oslo_concurrency')
    coordination.COORDINATOR.start()
    driver = nfs.NfsDriver(configuration=FakeConfiguration(mount_point_base), execute=processutils.execute)
    # do_setup() would mount shares and probe the share for root squash: set what it decides.
    driver._execute_as_root = False
    driver.configuration.nas_secure_file_operations = 'false'  # Cinder refuses snapshots otherwise
    driver.configuration.nas_secure_file_permissions = 'true'
    return driver


def volume(req, volume_id, size_gb):
    return types.SimpleNamespace(
        id=volume_id, name='volume-%s' % volume_id, provider_location=req['share'], size=size_gb,
        status='available', attach_status='detached', encryption_key_id=None, obj_context=None,
        volume_attachment=[], admin_metadata={}, volume_admin_metadata=[])


def snapshot(vol, snapshot_id, display_name='snap'):
    return types.SimpleNamespace(
        id=snapshot_id, volume=vol, volume_id=vol.id, volume_size=vol.size, status='deleting',
        display_name=display_name, context=None, obj_context=None, encryption_key_id=None)


def main():
    req = json.loads(sys.argv[1])
    driver = make_driver(req['mount_point_base'], req['lock_dir'])
    vol = volume(req, req['volume_id'], req.get('size_gb', 1))
    op = req['op']
    result = {'op': op}
    if op == 'mount_point':
        result['mount_point'] = driver._get_mount_point_for_share(req['share'])
    elif op == 'create_snapshot':
        driver.create_snapshot(snapshot(vol, req['snapshot_id']))
    elif op == 'delete_snapshot':
        driver.delete_snapshot(snapshot(vol, req['snapshot_id']))
    elif op == 'active_file':
        result['active'] = driver.get_active_image_from_info(vol)
    elif op == 'read_info':
        result['info'] = driver._read_info_file(driver._local_path_volume_info(vol), empty_if_missing=True)
    elif op == 'snapshot_backing_file':
        # What _get_snapshot_backing_file does; that method itself calls NfsDriver._qemu_img_info without the
        # volume name (a TypeError in 21.3.1), so this calls it the way the rest of the driver does, which
        # also applies Cinder's backing-file pattern check to the engine's overlay.
        info = driver._read_info_file(driver._local_path_volume_info(vol))
        forward = os.path.join(driver._local_volume_dir(vol), info[req['snapshot_id']])
        result['backing_file'] = driver._qemu_img_info(forward, vol.name).backing_file
    elif op == 'backing_chain':
        chain = driver._get_backing_chain_for_path(vol, driver._local_path_active_image(vol))
        result['chain'] = [{'filename': c['filename'], 'backing_filename': c['backing-filename']} for c in chain]
    elif op == 'write_info':
        # Cinder's _write_info_file on the given dict: the reference bytes for the engine's writer.
        path = os.path.join(req['directory'], 'volume-%s.info' % req['volume_id'])
        driver._write_info_file(path, req['info'])
    else:
        raise SystemExit('unknown op %s' % op)
    json.dump(result, sys.stdout)


if __name__ == '__main__':
    main()
