"""sdbroker's in-pod agent: runs beside the WebUI in every WebUI pod.

It turns "the WebUI process is up" into "a user can generate now" (readiness
on port 7861 ``/ready``, or Agones SDK Ready and Health), learns the pod's
user from the broker's label when the pod is claimed, and points the WebUI's
output folders at ``/outputs/<user-slug>``.

It runs on the WebUI image's own Python (3.10 on Ubuntu 22.04) and needs only
the standard library and aiohttp: it never imports sdbroker, which is not in
the image. ``python -m agent`` with this directory's parent on PYTHONPATH.
"""
