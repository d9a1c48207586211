"""The S3 variants: both servers on one SeaweedFS, each in a bucket of its own."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.servers import version_of
from tests.support.seaweedfs import REGION, SeaweedFS, weed_binary


@dataclass
class SharedS3:
    """One SeaweedFS for the run and the `storage:` section each server gets on it."""

    redirect: bool
    seaweed: SeaweedFS
    dockyard: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, workdir: Path, redirect: bool) -> SharedS3:
        shared = cls(redirect, SeaweedFS(workdir).start())
        seaweed = shared.seaweed
        shared.dockyard = seaweed.storage_config(
            seaweed.create_bucket("dockyard"), redirect=redirect
        )
        # distribution 2.8's s3-aws driver; a regionendpoint makes it use path addressing.
        shared.reference = {
            "s3": {
                "accesskey": seaweed.access_key,
                "secretkey": seaweed.secret_key,
                "region": REGION,
                "regionendpoint": seaweed.endpoint_url,
                "bucket": seaweed.create_bucket("reference"),
                "rootdirectory": "/",
                "secure": False,
                "v4auth": True,
            }
        }
        if not redirect:
            shared.reference["redirect"] = {"disable": True}
        reference_mode = (
            "its default: blob GETs (Range ones too) redirected to S3, as Dockyard's"
            if redirect
            else "storage.redirect.disable: true, blobs served through the registry"
        )
        shared.notes = [
            f"both servers on one SeaweedFS ({version_of([weed_binary() or 'weed', 'version'])}) "
            "on 127.0.0.1, a bucket each; its memory is not counted in the peak RSS",
            f"Dockyard: storage.driver s3, path addressing, redirect: {str(redirect).lower()}",
            f"reference: distribution's s3 driver (s3-aws), {reference_mode}",
        ]
        return shared

    def stop(self) -> None:
        self.seaweed.stop()
