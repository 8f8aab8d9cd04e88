"""What sits above the services: the ``pooch`` command, the local stack and the offline jobs.

Nothing below (``services/``, ``libs/common``) imports from here.
"""
