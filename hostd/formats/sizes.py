"""Byte units, one definition for the build side and the host."""

MIB = 1024 * 1024
GIB = 1024 * MIB
