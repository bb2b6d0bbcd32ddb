#!/usr/bin/env bash
# Builds the local control plane (kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl, etcd, kwok, helm) and the real node's programs (kubelet, kube-proxy, CoreDNS,
# local-path-provisioner) from the Go module proxy into a versioned cache folder and prints it.
# A second run with the same versions finds the finished folder and returns at once; a run that
# failed keeps the steps it finished, so the next one starts where it stopped.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
versions=${AIMA_TESTENV_VERSIONS:-$here/versions.env}
# shellcheck source=versions.env
source "$versions"
export CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=mod" GOTOOLCHAIN=local

# The wrapper go.mod in k8s/ is derived from versions.env, so it is not part of the key.
key=$({ cat "$versions" "$here/build.sh"; go env GOVERSION; } | sha256sum | cut -c1-16)
cache_root=${AIMA_TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aima-testenv}
final="$cache_root/$K8S_VERSION-$key"
if [ -f "$final/.complete" ]; then echo "$final/bin"; exit 0; fi
# One build at a time (`make test` beside `make dev` on a fresh machine): a second run waits for the
# first and then finds its folder.
mkdir -p "$cache_root"
exec 9>"$final.lock"
flock 9
if [ -f "$final/.complete" ]; then echo "$final/bin"; exit 0; fi

work="$final.tmp"
mkdir -p "$work/bin" "$work/logs"
log() { echo "[testenv] $*" >&2; }

# run NAME VERSION CMD...: runs a build step unless an earlier run finished it; on failure names
# the binary, the version and the compiler's last lines, then exits non-zero.
run() {
  local name=$1 version=$2; shift 2
  local logf="$work/logs/$name.log" start=$SECONDS done="$work/.done-$1"
  [ -f "$done" ] && return 0
  log "building $name $version"
  if ! "$@" >"$logf" 2>&1; then
    log "FAILED to build $name $version; last lines of the compiler output:"
    tail -n 30 "$logf" >&2
    exit 1
  fi
  touch "$done"
  log "built $name $version in $((SECONDS - start))s"
}

# reports VERSION CMD...: the command runs to its end (no early-closing pipe to die of SIGPIPE) and
# its output must name VERSION.
reports() {
  local want=$1 out; shift
  out=$("$@" 2>&1) || { log "$* failed: $out"; return 1; }
  [[ $out == *"$want"* ]] || { log "$1 reports the wrong version (want $want): $out"; return 1; }
}

build_k8s() {
  local staging="v0.${K8S_VERSION#v1.}" minor=${K8S_VERSION#v1.}
  minor=${minor%%.*}
  local mod="$work/src/k8s"
  mkdir -p "$mod"
  if grep -q "k8s.io/kubernetes $K8S_VERSION\b" "$here/k8s/go.mod" 2>/dev/null; then
    cp "$here/k8s/go.mod" "$here/k8s/go.sum" "$mod/"
  else
    # First pinning: derive the wrapper module from upstream's own go.mod on the proxy.
    (cd "$mod" && go mod init aima.local/testenv/k8s >/dev/null 2>&1)
    local upstream
    upstream=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
    (cd "$mod" && go mod edit -go="$(awk '$1=="go"{print $2; exit}' "$upstream")")
    awk '$1=="godebug" && NF==2 {print $2}' "$upstream" | while read -r kv; do (cd "$mod" && go mod edit -godebug="$kv"); done
    sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\) => \./staging/src/.*#\1#p' "$upstream" |
      while read -r m; do (cd "$mod" && go mod edit -replace="$m=$m@$staging"); done
    (cd "$mod" && go get -tool \
      "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" \
      "k8s.io/kubernetes/cmd/kube-controller-manager@$K8S_VERSION" \
      "k8s.io/kubernetes/cmd/kube-scheduler@$K8S_VERSION" \
      "k8s.io/kubernetes/cmd/kubectl@$K8S_VERSION" \
      "k8s.io/kubernetes/cmd/kubelet@$K8S_VERSION" \
      "k8s.io/kubernetes/cmd/kube-proxy@$K8S_VERSION")
    # A new pin rewrites the committed wrapper module; commit it with versions.env.
    if [ "$versions" = "$here/versions.env" ]; then
      mkdir -p "$here/k8s" && cp "$mod/go.mod" "$mod/go.sum" "$here/k8s/"
    fi
  fi
  local ldflags="-s -w" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
    ldflags+=" -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  (cd "$mod" && go build -trimpath -tags selinux,notest,grpcnotrace -ldflags "$ldflags" -o "$work/bin/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy)
}

build_etcd() {
  local mod="$work/src/etcd"
  mkdir -p "$mod"
  (cd "$mod" && go mod init aima.local/testenv/etcd && go get -tool "go.etcd.io/etcd/server/v3@$ETCD_VERSION" &&
    go build -trimpath -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION" \
      -o "$work/bin/etcd" go.etcd.io/etcd/server/v3)
}

build_kwok() {
  GOBIN="$work/bin" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  # kwok's upstream stage definitions ship in its module zip; keep them beside the binary.
  local src
  src=$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION
  mkdir -p "$work/kwok" && cp -r "$src/kustomize/stage" "$src/kustomize/crd" "$work/kwok/" && chmod -R u+w "$work/kwok"
}

build_helm() {
  local minor=${K8S_VERSION#v1.}
  minor=${minor%%.*}
  GOBIN="$work/bin" go install -trimpath -ldflags "-s -w \
    -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor \
    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

# tool_build NAME MODULE PACKAGE VERSION [LDFLAGS]: builds PACKAGE through a scratch module, for
# modules whose replace directives `go install` refuses.
tool_build() {
  local name=$1 module=$2 package=$3 version=$4 ldflags=${5:-}
  local mod="$work/src/$name"
  rm -rf "$mod" && mkdir -p "$mod"
  (cd "$mod" && go mod init "aima.local/testenv/$name" && go get -tool "$module@$version" &&
    go build -trimpath -ldflags "-s -w $ldflags" -o "$work/bin/$name" "$package")
}
build_coredns() {
  tool_build coredns github.com/coredns/coredns github.com/coredns/coredns "$COREDNS_VERSION" \
    "-X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION"
}
build_local_path() {
  tool_build local-path-provisioner github.com/rancher/local-path-provisioner \
    github.com/rancher/local-path-provisioner "$LOCAL_PATH_VERSION" \
    "-X main.VERSION=$LOCAL_PATH_VERSION"
}

run etcd "$ETCD_VERSION" build_etcd
run kwok "$KWOK_VERSION" build_kwok
run helm "$HELM_VERSION" build_helm
run kubernetes "$K8S_VERSION" build_k8s
run coredns "$COREDNS_VERSION" build_coredns
run local-path-provisioner "$LOCAL_PATH_VERSION" build_local_path

# Every binary must run and report the pinned version before the folder counts as complete.
reports "$K8S_VERSION" "$work/bin/kube-apiserver" --version
reports "$K8S_VERSION" "$work/bin/kubectl" version --client
reports "$K8S_VERSION" "$work/bin/kubelet" --version
reports "$K8S_VERSION" "$work/bin/kube-proxy" --version
reports "${ETCD_VERSION#v}" "$work/bin/etcd" --version
reports "" "$work/bin/kwok" --version
reports "$HELM_VERSION" "$work/bin/helm" version --short
reports "${COREDNS_VERSION#v}" "$work/bin/coredns" -version
rm -rf "$work/src"
touch "$work/.complete"
rm -rf "$final" && mv "$work" "$final"
log "control plane binaries ready in $final/bin"
echo "$final/bin"
