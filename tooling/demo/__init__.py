"""``pooch demo``: the whole system on a simulated Sniffable, ending in a report folder.

plan (what a run does) -> services (the stack's services under supervision) -> phases (warm
start, live experiment with the closed loop, rogue version, chaos, drain) -> readback (the
topics, decoded) -> figures (the numbers) -> plots and report (report.md, report.json, PNGs).
"""
