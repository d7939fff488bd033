"""What both backends' sends modules share: the columns an operator sees of a send."""

from __future__ import annotations

# A job's sends as `campaign-sync sends JOB` lists them (the caller adds the order and the
# state filter; the job is the one parameter).
SENDS_OF_JOB = (
    "SELECT email, list, mailing, state, attempts, message_id, run_id, created_at, "
    "updated_at, detail FROM sends WHERE job = {job}"
)
