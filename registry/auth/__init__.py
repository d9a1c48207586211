"""Access control: users (htpasswd), basic and docker token auth, permissions, throttling.

`middleware.AccessControl` checks every `/v2/` request before any route runs;
`endpoint` serves the built-in token endpoint (`/auth/token`).
"""
