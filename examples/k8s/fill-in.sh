#!/bin/sh
# Fill in the two policy templates beside this script with the team's public key, the lock sha256 and the
# images they apply to; write them to OUTDIR (default: the current directory), ready for `kubectl apply -f`.
#
#   examples/k8s/fill-in.sh PUBLIC_KEY.pem LOCK_SHA256 IMAGE_GLOB [OUTDIR]
#
# PUBLIC_KEY.pem: the PEM public key `mlenv keygen` wrote (never the private key: the policies are readable
# by anyone who can read cluster objects). LOCK_SHA256: `sha256sum mlenv.lock | cut -d' ' -f1`.
# Needs only sh, awk, grep and mv. Bad input: one line on stderr, exit 2, nothing written.
set -eu

fail() {
    echo "fill-in.sh: $1" >&2
    exit 2
}

[ "$#" -eq 3 ] || [ "$#" -eq 4 ] || fail "usage: fill-in.sh PUBLIC_KEY.pem LOCK_SHA256 IMAGE_GLOB [OUTDIR]"
key=$1
lock=$2
glob=$3
out=${4:-.}
here=$(dirname "$0")

[ -r "$key" ] || fail "cannot read the public key file $key"
# Checked by name only: a key's bytes never go to the terminal.
if grep -q "PRIVATE KEY" "$key"; then fail "$key holds a private key; give the public key"; fi
grep -q "^-----BEGIN PUBLIC KEY-----$" "$key" || fail "$key is not a PEM public key (BEGIN PUBLIC KEY)"
printf '%s' "$lock" | grep -Eq '^[0-9a-f]{64}$' || fail "LOCK_SHA256 must be 64 lowercase hex digits, got '$lock'"
# The glob goes into a double-quoted YAML string and an awk replacement: no quote, backslash or ampersand.
case $glob in
    "" | *'"'* | *\\* | *'&'*) fail "IMAGE_GLOB must be non-empty, without \" \\ or &" ;;
esac
[ -d "$out" ] || fail "no directory $out"

for policy in kyverno-clusterpolicy.yaml policy-controller-clusterimagepolicy.yaml; do
    # The key replaces its placeholder line, each PEM line at that line's indent (a YAML block scalar).
    MLENV_KEY=$key MLENV_LOCK=$lock MLENV_GLOB=$glob awk '
        /^ *MLENV_TEAM_PUBLIC_KEY$/ {
            indent = substr($0, 1, index($0, "MLENV_TEAM_PUBLIC_KEY") - 1)
            while ((getline line < ENVIRON["MLENV_KEY"]) > 0) if (line != "") print indent line
            close(ENVIRON["MLENV_KEY"])
            next
        }
        { gsub(/MLENV_LOCK_SHA256/, ENVIRON["MLENV_LOCK"]); gsub(/MLENV_IMAGE_GLOB/, ENVIRON["MLENV_GLOB"]); print }
    ' "$here/$policy" >"$out/.$policy.tmp"
    mv "$out/.$policy.tmp" "$out/$policy"
done
echo "wrote $out/kyverno-clusterpolicy.yaml and $out/policy-controller-clusterimagepolicy.yaml"
