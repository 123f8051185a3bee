#!/bin/sh
# Start Alertmanager with the receivers of alertmanager.yml taken from the environment
# (ALERTMANAGER_WEBHOOK_URL, ALERTMANAGER_SLACK_WEBHOOK_URL), then exec it with the arguments.
# ALERTMANAGER_BIN names the binary (Debian: prometheus-alertmanager); ALERTMANAGER_CONFIG the
# source config (default: next to this script); ALERTMANAGER_RENDER_DIR where the rendered files
# go (default /tmp/alertmanager), readable by this user only: they hold secrets.
set -eu
here=$(dirname "$0")
source_config=${ALERTMANAGER_CONFIG:-$here/alertmanager.yml}
out=${ALERTMANAGER_RENDER_DIR:-/tmp/alertmanager}
umask 077
mkdir -p "$out"
placeholder=http://127.0.0.1:9/alertmanager-webhook-unset
webhook=${ALERTMANAGER_WEBHOOK_URL:-$placeholder}
case "$webhook" in
  http://*|https://*) ;;
  *) echo "render.sh: ALERTMANAGER_WEBHOOK_URL must be an http(s) URL" >&2; exit 2 ;;
esac
case "$webhook" in
  *'|'*) echo "render.sh: ALERTMANAGER_WEBHOOK_URL must not contain '|'" >&2; exit 2 ;;
esac
printf '%s' "${ALERTMANAGER_SLACK_WEBHOOK_URL:-http://127.0.0.1:9/slack-webhook-unset}" \
  > "$out/slack-webhook-url"
sed -e "s|$placeholder|$webhook|" -e "s|/tmp/alertmanager/slack-webhook-url|$out/slack-webhook-url|" \
  "$source_config" > "$out/alertmanager.yml"
exec "${ALERTMANAGER_BIN:-alertmanager}" --config.file="$out/alertmanager.yml" "$@"
