#!/bin/sh
set -e
test -f /srv/worker/VERSION
echo "worker $(cat /srv/worker/VERSION) ok"
