"""`keelctl install`: copy the booted version of a running host to another disk, the
"boot from a USB stick, install to the internal disk" flow (installer.py tells it)."""
