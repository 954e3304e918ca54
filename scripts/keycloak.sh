#!/usr/bin/env bash
# A real Keycloak for the test tier in test/keycloak/ and for `npm run demo -- --keycloak`.
#
#   scripts/keycloak.sh fetch         download the distribution once from Maven Central into
#                                     .cache/keycloak/ (git-ignored), unpack it, and run its
#                                     one-time dev-mode build, so later starts skip it
#   scripts/keycloak.sh check         exit 0 when Java and the distribution are here; else print
#                                     one line naming what is missing and how to get it, exit 1
#   scripts/keycloak.sh dist          print the unpacked distribution's directory
#   scripts/keycloak.sh run HOME HTTP_PORT MANAGEMENT_PORT [kc.sh options...]
#                                     run `kc.sh start-dev` in the foreground on 127.0.0.1 with
#                                     HOME as its throw-away home (data/ lives there; put realm
#                                     files in HOME/data/import); used by test/fixtures/keycloak-real.ts
#   scripts/keycloak.sh start [DIR]   start one in the background on free ports (data in DIR,
#                                     default .cache/keycloak/run), wait for /health/ready, print
#                                     its URLs; the realm is test/keycloak/realm.json
#   scripts/keycloak.sh stop [DIR]    stop the one `start` started, by its own process id
#
# The version is pinned here and nowhere else: Keycloak 26 runs on the OpenJDK 17 these machines
# have (26.7.x was checked); 26.7.4 is not on Maven Central.
set -euo pipefail

KEYCLOAK_VERSION=26.7.3

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="$ROOT/.cache/keycloak"
DIST="$CACHE/keycloak-$KEYCLOAK_VERSION"
ARTIFACT="org.keycloak:keycloak-quarkus-dist:$KEYCLOAK_VERSION:zip"

# Dev mode holds its heap small and fixed so the tier fits beside the rest of the suite on a
# 2-core machine (kc.sh's own default outside containers is -Xms64m -Xmx512m; it is written out
# here so a change of default cannot surprise us). C1 only: a short-lived test server spends
# its CPU on start-up, where the C2 compiler only competes with it.
export JAVA_OPTS_KC_HEAP="${JAVA_OPTS_KC_HEAP:--Xms128m -Xmx512m}"
export JAVA_OPTS_APPEND="${JAVA_OPTS_APPEND:--XX:TieredStopAtLevel=1 -XX:ActiveProcessorCount=2}"

# Options that Keycloak bakes into its build (build-time options): every start passes the same
# ones, or start-dev would rebuild itself (about a minute) first.
BUILD_OPTIONS=(--health-enabled=true)

die () { echo "keycloak.sh: $*" >&2; exit 1; }

missing () {
  if ! command -v java >/dev/null 2>&1; then
    echo "Java is missing (Keycloak $KEYCLOAK_VERSION needs OpenJDK 17 or later): apt-get install openjdk-17-jre-headless maven, then scripts/keycloak.sh fetch"
  elif [ ! -x "$DIST/bin/kc.sh" ] || [ ! -f "$DIST/.built" ]; then
    echo "the Keycloak $KEYCLOAK_VERSION distribution is missing from .cache/keycloak/: run scripts/keycloak.sh fetch"
  fi
}

# kc.sh in the foreground, with HOME as its home: the distribution's lib, themes, providers and
# conf are linked in, data/ is HOME's own, so a run never touches another's database.
run () {
  local home="$1" http_port="$2" management_port="$3"
  shift 3
  mkdir -p "$home/data/import"
  for part in lib themes providers conf; do
    [ -e "$home/$part" ] || ln -s "$DIST/$part" "$home/$part"
  done
  # Dev mode's H2 file writes a commit out up to 500 ms later (WRITE_DELAY), and a test that
  # kills Keycloak (SIGKILL) right after creating a user then lost the user (CI saw a 404 after
  # the restart). A database behind a real Keycloak keeps what it committed; so does this one
  # with the delay at 0.
  # The issuer is fixed to this URL (hostname v2): tokens carry the same `iss` whether they were
  # asked for here or through a proxy in front; back-channel URLs in discovery follow the
  # request (protocol-facts §C.2).
  exec "$DIST/bin/kc.sh" "-Dkc.home.dir=$home" start-dev \
    "${BUILD_OPTIONS[@]}" \
    --http-host=127.0.0.1 --http-port="$http_port" \
    --http-management-port="$management_port" \
    --hostname="http://127.0.0.1:$http_port" --hostname-backchannel-dynamic=true \
    --import-realm \
    --db-url-properties=';WRITE_DELAY=0' \
    "$@"
}

free_port () {
  node -e "const s=require('net').createServer();s.listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"
}

# Waits for /health/ready on the management port, at most $2 seconds; fails early if $3 (a pid) exits.
wait_ready () {
  local url="$1" deadline=$((SECONDS + $2)) pid="$3"
  until curl -fsS -o /dev/null "$url" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || return 1
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 1
  done
}

fetch () {
  command -v java >/dev/null 2>&1 || die "Java is missing: apt-get install openjdk-17-jre-headless"
  if [ ! -x "$DIST/bin/kc.sh" ]; then
    command -v mvn >/dev/null 2>&1 || die "Maven is missing: apt-get install maven"
    mkdir -p "$CACHE"
    echo "== fetching $ARTIFACT"
    mvn -q -B org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
      -Dartifact="$ARTIFACT" -DoutputDirectory="$CACHE" -Dmdep.overWriteReleases=true
    rm -rf "$DIST.partial" && mkdir -p "$DIST.partial"
    unzip -q "$CACHE/keycloak-quarkus-dist-$KEYCLOAK_VERSION.zip" -d "$DIST.partial"
    mv "$DIST.partial/keycloak-$KEYCLOAK_VERSION" "$DIST" && rmdir "$DIST.partial"
    rm -f "$CACHE/keycloak-quarkus-dist-$KEYCLOAK_VERSION.zip"
  fi
  if [ ! -f "$DIST/.built" ]; then
    # start-dev builds itself on its first start, then re-executes; once "Running the server in
    # development mode" is printed the build is on disk and this warm-up server can stop.
    echo "== building Keycloak $KEYCLOAK_VERSION for dev mode (once, about a minute)"
    local home log pid
    home="$(mktemp -d "${TMPDIR:-/tmp}/keycloak-build.XXXXXX")"
    log="$home/keycloak.log"
    run "$home" "$(free_port)" "$(free_port)" >"$log" 2>&1 </dev/null &
    pid=$!
    until grep -q 'Running the server in development mode' "$log" 2>/dev/null; do
      kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; die "the dev-mode build failed"; }
      sleep 1
    done
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$home"
    touch "$DIST/.built"
  fi
  echo "== Keycloak $KEYCLOAK_VERSION is ready in ${DIST#"$ROOT"/}"
}

start () {
  local dir="${1:-$CACHE/run}"
  local why; why="$(missing)"; [ -z "$why" ] || die "$why"
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then die "already running (pid $(cat "$dir/pid")); scripts/keycloak.sh stop first"; fi
  rm -rf "$dir" && mkdir -p "$dir/data/import"
  cp "$ROOT/test/keycloak/realm.json" "$dir/data/import/realm.json"
  local http management
  http="$(free_port)"; management="$(free_port)"
  KC_BOOTSTRAP_ADMIN_USERNAME=admin KC_BOOTSTRAP_ADMIN_PASSWORD=admin \
    nohup "$0" run "$dir" "$http" "$management" >"$dir/keycloak.log" 2>&1 </dev/null &
  echo $! >"$dir/pid"
  local began=$SECONDS
  wait_ready "http://127.0.0.1:$management/health/ready" 300 "$(cat "$dir/pid")" || { tail -20 "$dir/keycloak.log" >&2; die "Keycloak did not become ready (log: $dir/keycloak.log)"; }
  echo "$http" >"$dir/http-port"
  echo "Keycloak $KEYCLOAK_VERSION ready in $((SECONDS - began)) s (pid $(cat "$dir/pid"), log $dir/keycloak.log)"
  echo "  issuer      http://127.0.0.1:$http/realms/test"
  echo "  admin       http://127.0.0.1:$http/admin/ (admin / admin)"
  echo "  management  http://127.0.0.1:$management/health/ready"
}

stop () {
  local dir="${1:-$CACHE/run}"
  [ -f "$dir/pid" ] || die "nothing started in $dir"
  local pid; pid="$(cat "$dir/pid")"
  # kc.sh forwards SIGTERM to its JVM and waits for it (graceful shutdown).
  if kill -TERM "$pid" 2>/dev/null; then
    while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
  fi
  rm -f "$dir/pid"
  echo "stopped"
}

case "${1:-}" in
  fetch) fetch ;;
  check) why="$(missing)"; [ -z "$why" ] || { echo "$why"; exit 1; } ;;
  dist) echo "$DIST" ;;
  version) echo "$KEYCLOAK_VERSION" ;;
  run) shift; [ $# -ge 3 ] || die "usage: run HOME HTTP_PORT MANAGEMENT_PORT [options]"; run "$@" ;;
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  *) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
