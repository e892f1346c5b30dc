"""A deployment seen from outside its unit: the lifecycle verbs (deploy, start, stop, remove)
over a UnitManager, the launcher's state file, and its status in one word and one line. Shared
by the CLI and the daemon.
"""
