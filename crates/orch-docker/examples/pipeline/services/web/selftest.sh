#!/bin/sh
set -e
test -f /srv/web/VERSION
echo "web $(cat /srv/web/VERSION) ok"
