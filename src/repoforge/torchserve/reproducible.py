"""Make torch-model-archiver's .mar / .war files byte-reproducible.

The archivers stamp every zip entry with the file's mtime and write `createdOn` (the wall clock)
into the manifest, so two builds of the same spec differ and the lock file's hashes cannot be
compared across builds. This rewrites the archive with entries in name order, one fixed timestamp,
fixed permissions, and `createdOn` set to that same timestamp. The timestamp is
``SOURCE_DATE_EPOCH`` when set (the reproducible-builds convention), else 1980-01-01, the earliest
time a zip can hold. TorchServe only displays `createdOn`.
"""

from __future__ import annotations

import json
import os
import time
import zipfile
from pathlib import Path

MANIFESTS = ("MAR-INF/MANIFEST.json", "WAR-INF/MANIFEST.json")
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def build_time() -> tuple[int, int, int, int, int, int]:
    """The timestamp written into archives: ``SOURCE_DATE_EPOCH`` (UTC) or 1980-01-01."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch.isdigit():
        t = time.gmtime(int(epoch))
        stamp = (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec - t.tm_sec % 2)  # zip keeps even seconds
        if stamp >= ZIP_EPOCH:
            return stamp
    return ZIP_EPOCH


def normalize_archive(path: Path) -> Path:
    """Rewrite the zip at ``path`` in place (atomically) so the same inputs give the same bytes."""
    stamp = build_time()
    created = "{2:02d}/{1:02d}/{0:04d} {3:02d}:{4:02d}:{5:02d}".format(*stamp)  # the archiver's own format
    with zipfile.ZipFile(path) as src:
        entries = sorted(
            ((i.filename, i.is_dir(), i.compress_type, src.read(i)) for i in src.infolist()), key=lambda e: e[0]
        )
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w") as dst:
        for name, is_dir, compress_type, data in entries:
            if name in MANIFESTS:
                manifest = json.loads(data)
                if "createdOn" in manifest:
                    manifest["createdOn"] = created
                data = (json.dumps(manifest, indent=2) + "\n").encode()
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.create_system = 3  # unix, so the mode bits below are read
            info.external_attr = ((0o40755 if is_dir else 0o100644) << 16) | (0x10 if is_dir else 0)
            info.compress_type = zipfile.ZIP_STORED if is_dir else compress_type
            dst.writestr(info, data)
    os.replace(tmp, path)
    return path
