#!/bin/sh
# Runs the bundled example: an import, an export and list-jobs, on a local folder.
set -e
here=$(cd "$(dirname "$0")" && pwd)
cfg="$here/campaign-sync.yaml"
campaign-sync --config "$cfg" import newsletter-import
campaign-sync --config "$cfg" export newsletter-export
campaign-sync --config "$cfg" list-jobs
echo
echo "exported files:"
ls -l "$here/inbox/export"
