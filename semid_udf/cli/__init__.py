"""The command-line entry points: ``semid-train``, ``semid-assign``, ``semid-demo``,
``semid-report``, ``semid-import``, ``semid-export`` (each module's ``cli``).

They are thin: flags, one session, one public function of the library. ``jobs/*.py`` at the
repository root are the same commands as plain files for ``spark-submit``; they are not an
installed package, so a ``jobs`` folder or package of a user's own is never shadowed.
"""
