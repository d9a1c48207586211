"""The vocabulary the HTTP layer (`registry`) and storage (`storage`) both speak:
repository names, tags and digests, manifest formats, and the table of error codes.
It imports neither of them."""
