"""Dockyard against the reference registry (CNCF distribution), side by side.

`python -m bench` installs what is missing, starts both servers on 127.0.0.1 with
fresh data directories on the same disk, measures every figure alternately A/B
over several rounds and rewrites its sections of `bench/RESULTS.md` (`--only costs`:
Dockyard against itself, metrics and events on and off; bench/costs.py).
"""
