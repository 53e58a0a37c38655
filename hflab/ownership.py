"""Who started a run, and who may stop, resume or delete it.

Every run records its owner when it is created: a browser session of the app
(``session:<token>``, one token per browser tab), the command line (``cli``), a Python program
using :class:`hflab.lab.Lab` (``python``) or a bundle import (``import``).  The history is
shared — every session sees every run — but a session's Stop, Resume and Delete act only on the
runs it started, unless the user takes a run over explicitly (the page asks for a confirmation
naming the runs); the taker then owns the run.  The command line and Python code act on any run
(``owner=None``): whoever has a shell on the machine has the store anyway, so a check there would
protect nothing.  This is a guard against a classmate's accidental click, not a security
boundary — exposing the lab beyond the machine needs the authenticating proxy of the README.
"""

CLI, PYTHON, IMPORT = "cli", "python", "import"
SESSION = "session:"
_LABELS = {CLI: "the command line", PYTHON: "a Python program", IMPORT: "a bundle import"}


class NotYourRun(ValueError):
    """An action on runs another session or process started, without taking them over."""


def session_owner(token: str) -> str:
    return SESSION + token


def origin_label(owner: str | None, me: str | None = None) -> str:
    """Where a run came from, as a session ``me`` should read it."""
    owner = owner or ""
    if me is not None and owner == me:
        return "this session"
    if owner.startswith(SESSION):
        return "another browser session"
    return _LABELS.get(owner, "not recorded (an older run)")


def foreign(store, run_ids, owner: str | None) -> dict[int, str]:
    """``{run: its owner}`` of the runs among ``run_ids`` that ``owner`` did not start (none when
    ``owner`` is None: the command line and Python act on any run)."""
    if owner is None:
        return {}
    owners = {int(i): store.get_run(int(i)).get("owner") or "" for i in run_ids}
    return {i: o for i, o in owners.items() if o != owner}


def claim(store, run_ids, owner: str | None, take_over: bool, action: str):
    """Check that ``owner`` may ``action`` every run of ``run_ids``: raises :class:`NotYourRun`
    naming the others' runs and where they came from, before anything is done; with
    ``take_over`` those runs become ``owner``'s."""
    others = foreign(store, run_ids, owner)
    if not others:
        return
    if not take_over:
        named = ", ".join(f"#{i} (started by {origin_label(o)})" for i, o in sorted(others.items()))
        one = len(others) == 1
        raise NotYourRun(f"cannot {action} run{'' if one else 's'} {named}: "
                         f"{'it is' if one else 'they are'} not this session's — take "
                         f"{'it' if one else 'them'} over first")
    for i in others:
        store.set_owner(i, owner)
