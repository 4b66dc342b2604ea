"""The part of the Ignition config spec v3 (3.0.0 to 3.5.0) a container host needs.

config.py parses and validates a whole config into frozen dataclasses (nothing is
touched before the whole config is known to be good); apply.py applies it to a root
directory, so tests can apply into a temporary tree. Standard library only: this runs
inside images with Debian's python3."""
