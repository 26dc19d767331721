"""gatectl's exit codes, and how `gatectl --help` explains them."""

from __future__ import annotations

__all__ = [
    "EXIT_CODES_HELP",
    "EXIT_CONFLICT",
    "EXIT_NOT_APPLIED",
    "EXIT_OK",
    "EXIT_REJECTED",
    "EXIT_ROLLOUT_FAILED",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
]

EXIT_OK = 0
EXIT_REJECTED = 1  # validation failed, or no such model, version, rule or rollout
EXIT_USAGE = 2  # argparse's own code for a malformed command line
EXIT_CONFLICT = 3  # the rule changed underneath: read it again and retry
EXIT_UNREACHABLE = 4
EXIT_NOT_APPLIED = 5  # a rule was written, but no live gateway applied it
EXIT_ROLLOUT_FAILED = 6  # rollout status --watch: the rollout ended rolled back or aborted

EXIT_CODES_HELP = f"""exit codes:
  {EXIT_OK}  done (a rule written: applied by every live gateway, by some (a warning lists the
     others), or no gateway is live (a note))
  {EXIT_REJECTED}  rejected: validation failed, or no such model, version, rule or rollout
  {EXIT_USAGE}  usage: a malformed flag or value, no Redis given
  {EXIT_CONFLICT}  conflict: the rule changed underneath; read it again and retry
  {EXIT_UNREACHABLE}  Redis unreachable, or refusing writes (full, too few replicas, read-only)
  {EXIT_NOT_APPLIED}  a rule was written, but none of the live gateways applied it within --wait
     (each is listed with why: a version FAILED, still loading); it stays stored
  {EXIT_ROLLOUT_FAILED}  rollout status --watch: the rollout ended rolled back or aborted
"""
