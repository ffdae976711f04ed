#!/usr/bin/env bash
# Slow conformance runs, not part of the test suite (`make conformance`):
# testssl.sh, and h2spec when it is installed (it is not packaged: see
# docs/CONFORMANCE.md for how to build it), against corral's TLS listener
# and against nginx serving the same certificate on this machine, side by
# side in docs/CONFORMANCE.md. `H2SPEC=/path/to/h2spec` picks a binary.
# Bounded: each scan has a time limit; only 127.0.0.1 is targeted.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh --test
need=()
command -v testssl >/dev/null || need+=(testssl.sh)
command -v nginx >/dev/null || need+=(nginx)
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi
export $(cat target/.corral-python)
cargo build --release

work=$(mktemp -d)
trap 'kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
cd "$work"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key.pem \
    -out cert.pem -days 2 -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
cp "$OLDPWD/tests/apps/hello.py" .
cat > site.toml <<EOF
[server]
listen = ["127.0.0.1:18480"]
pid_file = "corral.pid"
[app]
module = "hello:application"
chdir = "."
workers = 1
[tls]
listen = ["127.0.0.1:18443"]
hsts = "max-age=63072000"
[[tls.cert]]
cert = "cert.pem"
key = "key.pem"
[log]
access = "off"
EOF
"$OLDPWD/target/release/corral" serve --config site.toml 2>corral.log &
echo $! > corral.pid
cat > nginx.conf <<EOF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx.log;
events {}
http {
    access_log off;
    server {
        listen 127.0.0.1:18444 ssl http2;
        ssl_certificate $work/cert.pem;
        ssl_certificate_key $work/key.pem;
        add_header Strict-Transport-Security "max-age=63072000";
        location / { return 200 "Hello, World!"; }
    }
}
EOF
nginx -c "$work/nginx.conf"
# Scan only what this script started: both must be up on their own ports.
for _ in $(seq 50); do grep -q "corral ready" corral.log && break; sleep 0.2; done
grep -q "corral ready" corral.log || { echo "corral did not start:"; cat corral.log; exit 1; }
[ -s nginx.pid ] || { echo "nginx did not start"; cat nginx.log; exit 1; }

scan() { # name port
    timeout 600 testssl --quiet --color 0 --warnings off --jsonfile "$1.json" \
        "https://127.0.0.1:$2/" > "$1.txt" 2>&1 || true
}
scan corral 18443
scan nginx 18444

h2spec_bin=${H2SPEC:-$(command -v h2spec || true)}
h2scan() { # name port
    timeout 600 "$h2spec_bin" -h 127.0.0.1 -p "$2" -t -k -o 5 > "$1-h2spec.txt" 2>&1 || true
}
h2summary() { # name: the totals line, then each failed case
    grep -E '^[0-9]+ tests, ' "$1-h2spec.txt" || echo "h2spec printed no totals:"
    sed -n '/^Failures:/,/^[0-9]* tests, /p' "$1-h2spec.txt" | grep -E '^ *([0-9]+\.|×|Generic|Hypertext|HPACK)' || true
}
if [ -n "$h2spec_bin" ]; then
    h2scan corral 18443
    h2scan nginx 18444
fi

summary() { # name: one line per finding that is not OK or INFO
    python3 - "$1.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
bad = [r for r in rows if r.get("severity") not in ("OK", "INFO", "DEBUG")]
print("%d checks, %d not OK/INFO" % (len(rows), len(bad)))
for r in bad:
    print("- %s (%s): %s" % (r["id"], r["severity"], r["finding"]))
PY
}
out="$OLDPWD/docs/CONFORMANCE.md"
{
    echo "# Conformance"
    echo
    echo "Written by \`make conformance\` (scripts/conformance.sh) on $(date -u +%Y-%m-%d), $(uname -srm),"
    echo "testssl.sh $(testssl --version 2>/dev/null | grep -o '3\.[0-9.]*' | head -1), nginx $(nginx -v 2>&1 | cut -d/ -f2)."
    echo "Both serve the same ECDSA P-256 certificate, self-signed and valid for 2 days,"
    echo "so the chain-of-trust, expiry and revocation findings are expected for both."
    echo
    echo "## testssl.sh: corral"
    echo '```'
    summary corral
    echo '```'
    echo
    echo "## testssl.sh: nginx (same machine, same certificate)"
    echo '```'
    summary nginx
    echo '```'
    echo
    echo "## h2spec (HTTP/2 over TLS)"
    if [ -n "$h2spec_bin" ]; then
        echo
        echo "$("$h2spec_bin" --version 2>&1 | head -1), with \`-t -k -o 5\`."
        for name in corral nginx; do
            echo
            echo "$name:"
            echo '```'
            h2summary $name
            echo '```'
        done
    else
        echo
        echo "Not run: h2spec is not packaged on Debian. Build it from its source"
        echo "(github.com/summerwind/h2spec) with Debian's golang-go and the"
        echo "golang-github-*-dev packages for its go.mod requirements in GOPATH mode"
        echo "(\`GO111MODULE=off\`, GOPATH including /usr/share/gocode), then run"
        echo "\`H2SPEC=/path/to/h2spec make conformance\`."
    fi
} > "$out"
echo "wrote $out"
