#!/usr/bin/env bash
# `make test` runs this before pytest: it installs the Label Studio server (infra/labelstudio/
# requirements.txt, pinned) into its own virtual environment .venv-labelstudio (its pins clash with
# requirements.lock, so never into .venv) and migrates one empty database there that each test
# server starts from (tests/labelstudio.py: about 5 s instead of 30 s of migrations). Reinstalls
# when requirements.txt changes. It never fails: without it the review tests skip, saying why.
cd "$(dirname "$0")/.." || exit 0
REQ=infra/labelstudio/requirements.txt
VENV=.venv-labelstudio
TEMPLATE=$VENV/template
want=$(sha256sum "$REQ" 2>/dev/null | cut -d' ' -f1)
if [ -n "$want" ] && [ "$(cat "$VENV/.installed" 2>/dev/null)" = "$want" ] && [ -f "$TEMPLATE/label_studio.sqlite3" ]; then
  exit 0
fi
note() { echo "note: $* - the Label Studio review tests (tests/test_review.py) will skip"; exit 0; }
[ -n "$want" ] || note "$REQ not found"
PY=${PYTHON:-python3}
command -v "$PY" >/dev/null 2>&1 || note "no $PY to create $VENV with"
log=$(mktemp -t defectops-labelstudio-install.XXXXXX.log 2>/dev/null || echo /tmp/defectops-labelstudio-install.log)
echo "installing Label Studio into $VENV for the review tests (log: $log)..."
start=$(date +%s)
rm -rf "$VENV"
"$PY" -m venv "$VENV" >"$log" 2>&1 &&
  "$VENV/bin/python" -m pip install -q --upgrade pip >>"$log" 2>&1 &&
  "$VENV/bin/python" -m pip install -q -r "$REQ" >>"$log" 2>&1 ||
  note "installing Label Studio failed (see $log)"
# the migrated empty database (no user, no project): a copy is every test server's start
mkdir -p "$TEMPLATE"
env -u DJANGO_DB -u LABEL_STUDIO_DJANGO_DB LABEL_STUDIO_BASE_DATA_DIR="$TEMPLATE" DJANGO_DB=sqlite \
  LATEST_VERSION_CHECK=false COLLECT_ANALYTICS=false "$VENV/bin/label-studio" version >>"$log" 2>&1 &&
  [ -f "$TEMPLATE/label_studio.sqlite3" ] || note "migrating Label Studio's database failed (see $log)"
echo "$want" >"$VENV/.installed"
echo "Label Studio $("$VENV/bin/python" -c 'import label_studio; print(label_studio.__version__)' 2>/dev/null) installed in $VENV ($(( $(date +%s) - start )) s)"
exit 0
