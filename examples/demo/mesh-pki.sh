#!/usr/bin/env bash
# Makes the mesh demo's certificates with openssl in DIR: a CA (ca.crt,
# ca.key) and one workload certificate per NAME=DNS=SPIFFE_ID argument
# (NAME.crt, NAME.key, and NAME.pem = both, as HAProxy's `crt` wants), each
# good for server and client auth, valid one day.
# Used by examples/mesh-demo.sh and benches/mesh.sh.
set -euo pipefail
dir=$1
shift
mkdir -p "$dir"
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1)
openssl req -x509 "${ec[@]}" -subj /CN=mesh-demo-ca \
  -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
for spec in "$@"; do
  IFS== read -r name dns id <<<"$spec"
  openssl req -x509 "${ec[@]}" -subj "/CN=$dns" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
    -addext "subjectAltName=URI:$id,DNS:$dns" \
    -addext "extendedKeyUsage=serverAuth,clientAuth" \
    -addext "basicConstraints=critical,CA:FALSE" \
    -keyout "$dir/$name.key" -out "$dir/$name.crt" 2>/dev/null
  cat "$dir/$name.crt" "$dir/$name.key" >"$dir/$name.pem"
done
