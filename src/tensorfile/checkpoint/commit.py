"""The step commit protocol: a step folder appears complete or not at all.

1. Write every file of the step into a fresh temporary folder
   ``<directory>/.tmp-<name>-<random>`` and ``fsync`` each file.
2. ``fsync`` the temporary folder, ``rename`` it to ``<directory>/<name>``, and
   ``fsync`` ``<directory>`` so the rename survives a power loss.

A reader lists only names that match the step pattern, so a temporary folder
left by a crash is invisible; :func:`remove_temporaries` deletes them. A step is
deleted the same way in reverse (:func:`delete`): renamed out of the namespace,
then removed. An
existing step of the same name is moved aside first and deleted only after the
new one is in place.
"""

from __future__ import annotations

import os
import secrets
import shutil
from typing import Callable

from ..atomic import fsync_dir

__all__ = ["TEMP_PREFIX", "commit", "begin", "publish", "delete", "remove_temporaries"]

TEMP_PREFIX = ".tmp-"
#: A committed step moved aside while it is being replaced.
OLD_PREFIX = ".tmp-old-"
#: A step being deleted: renamed out of the step namespace first, so a crash mid-delete leaves no half step.
TRASH_PREFIX = ".tmp-trash-"


def commit(directory: str, name: str, write: Callable[[str], None]) -> str:
    """Build step ``name`` in a temporary folder with ``write(folder)``, then rename it into place.

    ``write`` must fsync what it writes (tensorfile.save does). Returns the step's path.

    Raises:
        OSError: any write error; the temporary folder is removed and earlier
            steps are untouched.
    """
    temp = begin(directory, name)
    try:
        write(temp)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return publish(directory, name, temp)


def begin(directory: str, name: str) -> str:
    """Step 1 alone: a fresh temporary folder for step ``name`` (several processes may write into it, as the
    ranks of a distributed save do); :func:`publish` renames it into place."""
    temp = os.path.join(directory, f"{TEMP_PREFIX}{name}-{secrets.token_hex(4)}")
    os.mkdir(temp)
    return temp


def publish(directory: str, name: str, temp: str) -> str:
    """Step 2 alone: ``fsync`` the temporary folder ``temp`` (its files fsynced by their writers) and rename it
    to step ``name``, moving an existing step of that name aside and deleting it once the new one is in place.

    Raises:
        OSError: the rename failed; ``temp`` is removed and an existing step is put back.
    """
    final = os.path.join(directory, name)
    old = None
    try:
        fsync_dir(temp)
        if os.path.exists(final):
            old = os.path.join(directory, f"{OLD_PREFIX}{name}-{secrets.token_hex(4)}")
            os.rename(final, old)
        os.rename(temp, final)
        fsync_dir(directory)
    except BaseException:
        if old is not None and not os.path.exists(final):
            os.rename(old, final)  # the step being replaced comes back
            old = None
        shutil.rmtree(temp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def delete(directory: str, name: str) -> None:
    """Delete step ``name`` atomically: rename it out of the step namespace, then remove it.

    A crash after the rename leaves a ``.tmp-trash-`` folder that :func:`remove_temporaries`
    deletes; a reader never sees a step folder with part of its files.
    """
    trash = os.path.join(directory, f"{TRASH_PREFIX}{name}-{secrets.token_hex(4)}")
    try:
        os.rename(os.path.join(directory, name), trash)
    except FileNotFoundError:
        return
    fsync_dir(directory)
    shutil.rmtree(trash, ignore_errors=True)


def remove_temporaries(directory: str) -> list[str]:
    """Delete temporary folders a crashed save left behind; returns their names.

    A step that was moved aside to be replaced, and whose replacement never
    arrived (a crash between the two renames), is put back instead.
    """
    removed = []
    for entry in sorted(os.listdir(directory)):
        path = os.path.join(directory, entry)
        if entry.startswith(OLD_PREFIX):
            name = entry[len(OLD_PREFIX) :].rsplit("-", 1)[0]
            if not os.path.exists(os.path.join(directory, name)):
                os.rename(path, os.path.join(directory, name))
                continue
        if entry.startswith(TEMP_PREFIX):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(entry)
    return removed
