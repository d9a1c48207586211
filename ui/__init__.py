"""The web UI at `/ui/`: browse, search, inspect and delete in a browser (README "Web UI").

Server-rendered pages (`web.py`, Jinja2 templates with autoescaping) over the same store
the API uses, behind the registry's own users and rules (`access.py`) and a signed session
cookie with CSRF tokens (`session.py`). No page reads the whole registry: the repository
list reads the catalog's names and the usage summaries of the page it shows
(`repositories.py`); the other pages read one repository (`images.py`).
"""
