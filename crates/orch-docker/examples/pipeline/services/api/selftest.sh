#!/bin/sh
set -e
test -f /srv/api/VERSION
echo "api $(cat /srv/api/VERSION) ok"
