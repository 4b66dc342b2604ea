"""`keel install`: write a built image to a disk or an image file, check what was
written, and put a provisioning config on its ESP (installer.py tells the story)."""
