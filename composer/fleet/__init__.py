"""Fleets: reboot coordination through FleetLock on etcd (docs/fleet.md)."""
